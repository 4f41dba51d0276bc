"""rfbench from Python: :func:`run` returns a sweep's results as a pandas DataFrame, with the rows, provenance,
resume and regression gate of the command line (which calls the same :func:`prepare` and :func:`execute`).

    import rfbench
    frame = rfbench.run(suite="toy2d", models=["1-rf", "2-rf"], solvers=["euler", "heun"], steps=[1, 2, 4])
    frame = rfbench.run(suite="toy2d", models={"mine": my_flow}, solvers=["euler"], out="runs/mine")
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from rfbench.device import resolve_device
from rfbench.distributed import World, env_world_size
from rfbench.metrics import column_directions
from rfbench.metrics.features import find_inception_weights
from rfbench.files import folder_problem
from rfbench.models.cache import Cache, default_cache_dir
from rfbench.models.sources import LoadContext, as_source
from rfbench.plugins import load_plugins
from rfbench.registry import UnknownNameError
from rfbench.results.gate import (K_SIGMA, RETRAIN_FLOOR, GateMismatch, GateResult, Tolerance, check_comparable,
                                  check_models, check_spread, compare, parse_tolerance, spread_path)
from rfbench.results.report import load_results
from rfbench.suites.base import SUITES, Suite
from rfbench.suites.inputs import memory_problems, missing_inputs, model_problems
from rfbench.suites.plan import InputError, Plan, RunConfig, make_plan
from rfbench.suites.runner import RunOutput, run_suite
from rfbench.suites.score import scored_clashes


class GateFailed(AssertionError):
    """The regression gate found metrics worse than tolerated: ``failures`` (one line each), ``frame`` (the run's
    results, all kept) and ``result`` (the full :class:`~rfbench.results.gate.GateResult`)."""

    def __init__(self, result: GateResult, frame: pd.DataFrame, baseline: Path):
        self.result, self.frame, self.failures = result, frame, result.failures
        super().__init__(f"gate: {len(result.failures)} of {result.checked} comparisons worse than tolerated against "
                         f"{baseline}:\n" + "\n".join(result.failures))


@dataclass
class Gate:
    """The regression gate of a run: the baseline and its tolerances (explicit, or the recorded spread)."""

    path: Path
    baseline: pd.DataFrame
    tolerances: list[Tolerance] = field(default_factory=list)
    spread: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.tolerances:
            return ", ".join(map(str, self.tolerances))
        retrain = self.spread is not None and "nuisance" in self.spread and (self.spread["nuisance"] == "retrain").all()
        return (f"{K_SIGMA:g} sd of the retrain spread {spread_path(self.path)}, at least {100 * RETRAIN_FLOOR:g}% of "
                f"each value" if retrain else f"{K_SIGMA:g} sd of {spread_path(self.path)}")

    def verdict(self, frame: pd.DataFrame) -> GateResult:
        return compare(frame, self.baseline, column_directions(), self.tolerances, self.spread)


def load_gate(check: str | Path, fail_on: Sequence[str] = ()) -> Gate:
    """The baseline at ``check`` with the tolerances ``fail_on`` (``METRIC:+TOL``), else its spread file, checked
    now (its suite, version, samples and columns), not after the run."""
    from rfbench.results.report import read_csv, shown
    tolerances = [parse_tolerance(spec, column_directions()) for spec in fail_on]
    path = Path(check)
    baseline = load_results(path)
    where = path / "results.csv" if path.is_dir() and (path / "results.csv").is_file() else path
    missing = [c for c in ("suite", "suite_version", "n_samples", "steps") if c not in baseline]
    if missing:
        raise ValueError(f"--check {where}: no {', '.join(missing)} column: a baseline is a results table of an "
                         f"rfbench run (results.csv)")
    if baseline.empty:
        raise ValueError(f"--check {where}: no rows; a baseline needs the cells of an rfbench run (results.csv)")
    for col in ("suite_version", "n_samples", *column_directions()):   # gated numbers: compared after the run
        if col in baseline:
            values = pd.to_numeric(baseline[col], errors="coerce")
            bad = values.isna() & baseline[col].notna()
            if bad.any():
                line = f"line {int(bad.to_numpy().nonzero()[0][0]) + 2}: " if where.is_file() else ""
                raise ValueError(f"--check {where}: {line}column {col} holds {shown(baseline[col][bad].iloc[0])}; "
                                 f"{col} must be a number (or empty)")
    gate = Gate(path, baseline, tolerances)
    if "model_id" not in baseline:
        gate.notes.append(f"{path} has no model_id column (recorded before models had identities): the models' "
                          f"recipes and files are not compared with the baseline's")
    if not tolerances:
        spread_file = spread_path(path)
        if not spread_file.is_file():
            raise ValueError(f"--check {path}: no tolerances; pass --fail-on METRIC:+TOL or record the spread of "
                             f"retrains (or of seeds) as {spread_file} (rfbench spread)")
        spread = read_csv(spread_file, f"the spread of {path} (rfbench spread)")
        try:   # its numbers converted now: a bad entry is refused before the run, not after it
            gate.spread = check_spread(spread, baseline, column_directions())
        except GateMismatch as exc:
            raise ValueError(f"{spread_file}: {exc}") from None
    return gate


def prepare(suite: str | Suite, config: RunConfig, *, check: str | Path | None = None,
            fail_on: Sequence[str] = ()) -> tuple[Plan, Gate | None]:
    """The run's plan and gate, with every check that needs no data: options, the suite's cells, the memory its
    sizes need, the baseline's identity, the device, explicit Inception weights. Raises ValueError (or an
    UnknownNameError) naming the option."""
    if fail_on and check is None:
        raise ValueError("--fail-on needs --check BASELINE")
    if not len(SUITES):
        raise ValueError("no suite is registered: rfbench's suites come from its baselines, loaded through the entry "
                         "point rfbench.plugins that installing writes; run `pip install -e .` (again, if this "
                         "checkout was installed before the entry point existed)")
    suite = SUITES[suite] if isinstance(suite, str) else suite
    options = dict(config.extractor_options)
    if options and config.extractor is None and "inception" in suite.extractors:
        # inception options ask for inception: no silent fallback to another extractor
        config = replace(config, extractor="inception")
    # the gate's files and the plan are checked independently: a mistake in each is said at once
    gate, gate_error = _attempt(lambda: load_gate(check, fail_on) if check is not None else None)
    plan, plan_error = _attempt(lambda: make_plan(suite, config))
    errors = [exc for exc in (gate_error, plan_error) if exc is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputError([str(exc) for exc in errors])
    sizes = memory_problems(plan)      # before anything (the dry run's estimate included) allocates them
    if sizes:
        raise InputError(sizes)
    if options and plan.extractor != "inception":
        raise ValueError(f"--inception-weights/--inception-mode apply to suites scored with the inception "
                         f"extractor; suite {suite.name} uses {plan.extractor or 'no extractor'}")
    if gate is not None:     # what can be compared before the run: refuse now rather than after it
        seeds = f"{plan.first_seed}-{plan.first_seed + plan.num_samples - 1}"
        expected = pd.DataFrame([{"model": "any", "suite": plan.name, "suite_version": plan.version,
                                  "n_samples": plan.num_samples, "seeds": seeds}])
        check_comparable(expected, gate.baseline.drop(columns=["extractor", "reference"], errors="ignore"))
        # a factory's id covers the weights it loads (Factory.identify): compared after the run, once loaded
        check_models({m.name: {"model_id": m.source.identity(plan.suite).id} for m in plan.models
                      if m.source.missing(m.name) is None and not m.source.identified_by_loading}, gate.baseline)
    device = resolve_device(config.device)
    if env_world_size() > 1 and device.type == "cuda" and device.index is not None:
        raise ValueError(f"--device {config.device}: under torchrun each process uses the GPU of its local rank; "
                         f"pass --device cuda (or auto)")
    if options.get("weights") is not None:
        find_inception_weights(options["weights"])  # a missing explicit file: say so before any work
    return plan, gate


def _attempt(job: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``job()``'s result, or the bad-input error it raised (returned, to be said beside the others)."""
    try:
        return job(), None
    except (ValueError, TypeError, UnknownNameError, FileNotFoundError) as exc:
        return None, exc


def input_problems(plan: Plan, config: RunConfig, log: Callable[[str], None] = lambda msg: None,
                   out: str | Path | None = None) -> list[str]:
    """One line per input the run cannot start without, or model that does not fit the suite; nothing is run.
    ``out``: the run's folder, which must be writable (and the model cache, when a model is trained).
    Under torchrun no model is loaded for the check (every process would, before the processes are set up, and
    all must reach the same verdict): a model whose shape only loading tells fails in its cells instead."""
    missing = missing_inputs(plan)
    if out is not None:
        missing += [line for line in [folder_problem(out, "--out", "the run's results")] if line]
        # a row rfbench score added under the name of one of the run's models: neither may stand for the other
        missing += scored_clashes(out, [m.name for m in plan.unsharded.models])
    cache_dir = config.cache_dir if config.cache_dir is not None else default_cache_dir()
    if plan.trains:    # a cache that holds every model may be read-only (a shared one)
        line = folder_problem(cache_dir, "--cache", "the trained models")
        if line is not None:
            missing.append(line if config.cache_dir is not None else f"{line} (the default cache: set "
                           f"$RFBENCH_CACHE or pass --cache)")
    device = resolve_device(config.device)
    cache = Cache(config.cache_dir, log=log)

    def load(model):
        return model.source.load(LoadContext(plan.suite, cache, device, log))
    return missing + model_problems(plan, load=load if env_world_size() <= 1 else None, device=device)


def execute(plan: Plan, config: RunConfig, out: str | Path, gate: Gate | None = None, *, progress: bool = True,
            plots: bool = True, plot_format: str = "png", log: Callable[[str], None] | None = None,
            world: World | None = None) -> tuple[RunOutput, GateResult | None]:
    """Run the plan into ``out`` and, with a gate, compare the result with its baseline."""
    output = run_suite(plan, out, config, progress=progress, plots=plots, log=log, world=world,
                       plot_format=plot_format)
    output.frame.attrs["timings"] = dict(output.timings)    # seconds: training, sampling, metrics, total
    if gate is None or (world is not None and not world.is_main):
        return output, None
    try:
        return output, gate.verdict(output.frame)
    except GateMismatch as exc:
        return output, GateResult([f"gate: {exc}"], 0, [])


def _models(models) -> tuple[tuple[str, ...] | None, tuple]:
    """``models`` of :func:`run`: names (the suite's or registered ones), or a mapping name -> None (the same) or a
    source (a path, "package.module:function", a ModelSource or a model object)."""
    if models is None:
        return None, ()
    if isinstance(models, str):
        raise TypeError(f"models must be a list of names or a mapping name -> model, got the string {models!r}")
    if isinstance(models, Mapping):
        added = tuple((name, as_source(value, what=f"model {name}")) for name, value in models.items()
                      if value is not None)
        return tuple(models), added
    return tuple(models), ()


def run(suite: str | Suite = "toy2d", *, models: Sequence[str] | Mapping[str, Any] | None = None,
        solvers: Sequence[str] | None = None, steps: Sequence[int] | int | None = None,
        grids: Sequence[str] | None = None, solver_options: Any = (),
        out: str | Path | None = None, device: str | torch.device | None = None, num_samples: int | None = None,
        first_seed: int | None = None, batch_size: int | str | None = None, repeats: int | None = None,
        bootstrap: int | None = None, extractor: str | None = None, inception_weights: str | Path | None = None,
        inception_mode: str | None = None, data_dir: str | Path | None = None, ref_stats: str | Path | None = None,
        checkpoints: Mapping[str, str | Path] | None = None, cache: str | Path | None = None, resume: bool = True,
        save_samples: bool = False, check: str | Path | None = None, fail_on: Sequence[str] = (),
        plugins: Sequence[str] = (), progress: bool = False, plots: bool | None = None,
        log: Callable[[str], None] | None = None, threads: int | None = None, dtype: str = "fp32",
        compile: str | None = None, channels_last: bool = False,
        shard: tuple[int, int] | str | None = None) -> pd.DataFrame:
    """Run a suite (or part of it) and return its results, one row per cell, as the CLI writes them.

    Args mirror ``python benchmark.py``'s options (``grids``: time grids such as "uniform", "logsnr", "karras",
    or timestep spacings for discrete samplers; each fixed-grid cell runs on each; None: every cell keeps its own
    grid, a suite's cells theirs and an added solver its default; ``solver_options``: {"rtol": 1e-4}
    for every solver of the run that takes it, {"unipc": {"order": 3}} for one, or "KEY=VALUE" strings).
    ``models``: names of the suite's
    models or of registered ones (``rfbench.register_model``), or a mapping name -> model, where a model is a path
    (an rfbench, official rectified-flow / score-SDE, diffusers or TorchScript file), ``"package.module:function"``,
    a :class:`~rfbench.models.sources.ModelSource`, or an object (a flow ``model(x, t)`` or a DiffusionModel; its
    cells are never resumed). ``out=None`` keeps nothing on disk (a temporary folder, removed). ``check``: a
    baseline CSV to gate against (``fail_on``: tolerances such as "w2:+10%"); a failing gate raises
    :class:`GateFailed` carrying the frame. ``plugins``: files or modules to load first (installed ones always are).
    ``threads``: torch's CPU threads (default: one for models under 5M parameters, see :mod:`rfbench.threads`).
    ``dtype``, ``compile``, ``channels_last``: how the networks are evaluated (``--dtype``, ``--compile``,
    ``--channels-last``). ``shard``: (K, N) or "K/N", this job's share of the cells when N jobs fill one ``out``
    (``--shard``); the frame is then every cell of the run that ``out`` holds.
    The frame's ``attrs`` hold the files written, the models trained, the gate's verdict and ``timings`` (seconds of
    training, sampling, metrics and the total).
    """
    load_plugins(plugins)
    if shard is not None and out is None:
        raise ValueError(f"shard={shard!r} needs out=, the folder the shards fill together")
    names, added = _models(models)
    options = {k: v for k, v in (("weights", inception_weights), ("mode", inception_mode)) if v is not None}
    if options and "mode" not in options:
        options["mode"] = "clean"
    config = RunConfig(models=names, add_models=added, checkpoints=tuple((checkpoints or {}).items()),
                       solvers=solvers, grids=grids, solver_options=solver_options,
                       steps=steps, num_samples=num_samples, first_seed=first_seed, batch_size=batch_size,
                       repeats=repeats, bootstrap=bootstrap, extractor=extractor,
                       extractor_options=tuple(options.items()),
                       data_dir=None if data_dir is None else str(data_dir),
                       reference_file=None if ref_stats is None else str(ref_stats),
                       device=None if device is None else str(device),
                       cache_dir=None if cache is None else str(cache), resume=resume, save_samples=save_samples,
                       threads=threads, precision=dtype, compile=compile, channels_last=channels_last,
                       shard=shard)
    plan, gate = prepare(suite, config, check=check, fail_on=fail_on)
    problems = input_problems(plan, config, log or (lambda msg: None), out=out)
    if problems:
        raise InputError(problems)
    quiet = log or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="rfbench-run-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        output, verdict = execute(plan, config, folder, gate, progress=progress,
                                  plots=plots if plots is not None else out is not None, log=quiet)
        frame = output.frame
    frame.attrs["files"] = [str(p) for p in output.files] if out is not None else []
    frame.attrs["trained"] = output.trained
    if verdict is not None:
        frame.attrs["gate"] = {"failures": verdict.failures, "checked": verdict.checked, "skipped": verdict.skipped,
                               "notes": gate.notes}
        if verdict.failures:
            raise GateFailed(verdict, frame, gate.path)
    return frame

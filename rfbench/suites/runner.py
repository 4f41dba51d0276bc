"""Run a suite: set up (x0, reference, evaluation, resume), sweep the cells of every model, write tables and plots.

The sweep (:func:`sweep`) is the loop of the run in one screen; what it calls lives where its job is:
:mod:`rfbench.suites.execute` samples a cell (timed, batched, sharded), :mod:`rfbench.suites.evaluate` scores it,
:mod:`rfbench.results.resume` says which cells a rerun keeps, :mod:`rfbench.results.store` writes each cell as it
finishes, and :mod:`rfbench.distributed` coordinates the processes of a torchrun run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from rfbench.device import device_name, resolve_device
from rfbench.distributed import World, batch_plan, main_first, main_then_others
from rfbench.metrics import column_directions
from rfbench.models.cache import Cache
from rfbench.noise import SeedRows
from rfbench.models.sources import LoadContext, ModelIdentity, Recipe
from rfbench.models.speed import prepare
from rfbench.progress import Progress
from rfbench.results import ResultStore, cell_key, provenance, write_tables
from rfbench.results.plots import plot_model_grids, plot_paths, plot_quality_vs_costs
from rfbench.results.resume import Wanted, finished_cells, with_samples
from rfbench.results.store import is_scored
from rfbench.suites.base import Suite, SuiteModel, cell_nfe, ode_cell, search_work
from rfbench.suites.work import exact_key, scope_key, expect_training, expect_work
from rfbench.suites.evaluate import INDEPENDENT, INDEPENDENT_FIELDS, PLOT_PATHS, Evaluation, empty_metrics, image_eval
from rfbench.suites.execute import network_fields, probed_batch_size, sample_arrays, sample_cell, timing_protocol
from rfbench.suites.plan import Plan, RunConfig, make_plan, metric_columns
from rfbench.suites.shards import table_keys
from rfbench.threads import busy_note, load_average, threads_for, training_threads, using_threads

GRID_SAMPLES = 16  # images per row of samples_MODEL.png
GRID_ROWS = 4      # rows (distinct NFEs) per model in samples_MODEL.png


TIMINGS = ("training", "sampling", "metrics", "total")


@dataclass
class RunOutput:
    """A run's table (``frame``), the files written, the models trained (not loaded), and ``timings``: seconds spent
    in "training" (loading models: training them and their reflow pairs when not cached), "sampling" (the cells'
    timed runs, their warm-up and feature extraction, the batch size probe), "metrics" (scoring, the reference
    solutions and trajectories, setting up the reference features) and "total" (the whole run, tables and plots
    included, so at least the sum of training, sampling and metrics)."""

    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    kept: list[str] = field(default_factory=list)     # labels of the cells kept from an earlier run (resume)


@dataclass
class Sweep:
    """What one run works with, built once by :func:`run_suite` and passed to :func:`sweep`."""

    plan: Plan
    x0: torch.Tensor
    base: dict                          # the columns every row shares (suite, seeds, extractor, provenance, notes)
    identities: dict[str, ModelIdentity]
    store: ResultStore
    evaluation: Evaluation
    load: Callable[[SuiteModel], tuple[object, list[str]]]
    device: torch.device
    world: World
    say: Callable[[str], None]
    progress: Progress                  # the bar, counted in model evaluations (rfbench.progress)
    resumed: dict[str, str] = field(default_factory=dict)    # cell label -> stored key kept from an earlier run
    keys: list[str] = field(default_factory=list)            # stored keys of this run's rows, in order
    cache_entries: dict[str, str] = field(default_factory=dict)  # model -> the cache entry it was loaded from
    training: dict[str, dict] = field(default_factory=dict)  # model -> its train_nfe, train_wall_s, train_cost
    trajectories: dict = field(default_factory=dict)         # model -> (title, states) to plot (2D)
    grid: dict = field(default_factory=dict)                 # cell label -> (model, NFE, first images)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))
    planned_training: dict[str, list[str]] = field(default_factory=dict)   # model -> its training jobs on the bar
    threads: int | None = None          # --threads (None: rfbench.threads.threads_for decides per model)

    def timed(self, part: str):
        """A block whose seconds count towards ``timings[part]``."""
        return _timed(self.timings, part)


@contextlib.contextmanager
def _timed(timings: dict[str, float], part: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[part] += time.perf_counter() - start


def sweep(run: Sweep) -> None:
    """The run in three phases, one after another in this process: **train** (load or train every model that has a
    cell to compute, in the plan's order), then for each model's cells **sample** (timed, with nothing else running)
    and **score** (its metrics from its samples; the row is stored as soon as it is scored, so a run stopped
    half-way keeps every finished cell). A model that cannot be loaded, and a cell that fails (NaN samples, a solver
    that cannot proceed), are rows with their error; the sweep goes on. The bar counts model evaluations
    (:func:`expect_work`)."""
    plan, main = run.plan, run.world.is_main
    if plan.independent_row and main and not _keep(run, INDEPENDENT):
        with run.timed("metrics"):
            record = run.evaluation.independent_record(run.x0.cpu(), list(plan.seeds), run.base.get("notes"))
        _store(run, record, INDEPENDENT_FIELDS)
    loaded = {model.name: _train(run, model) for model in plan.models
              if not all(cell.label in run.resumed for cell in plan.grid(model.name))}
    for model in plan.models:
        if model.name not in loaded:       # every cell kept from an earlier run: the model is not even loaded
            for cell in plan.grid(model.name) if main else ():
                _keep(run, cell.label)
            continue
        net, error = loaded.pop(model.name)
        if error is not None:
            _failed_model(run, model, error)
        else:
            _sample_and_score(run, model, net)


def _train(run: Sweep, model: SuiteModel) -> tuple[object, str | None]:
    """The train phase for one model: (the network, None) loaded from the cache or trained, or (None, why not)."""
    run.progress.status(f"{model.name}: loading")
    with run.timed("training"):
        net, errors = run.load(model)
    for key in run.planned_training.pop(model.name, []):   # expected, but not reported as a job: off the bar
        if key in run.progress.pending:
            run.progress.finish(key, None)
    return net, errors[0] if errors else None


def _failed_model(run: Sweep, model: SuiteModel, error: str) -> None:
    """A failed row for each cell of a model that could not be loaded (a cell kept from an earlier run stays)."""
    run.say(f"{model.name}: could not load or train: {error}")
    cells = run.plan.grid(model.name)
    for key in [scope_key(model), exact_key(model)] + [cell.label for cell in cells]:
        run.progress.finish(key, None)
    for cell in cells if run.world.is_main else ():
        if not _keep(run, cell.label):
            _store(run, {**cell.fields(), **empty_metrics(run.plan.metrics), "status": "failed",
                         "error": f"model: {error}"}, cell.fields(), model)


def _sample_and_score(run: Sweep, model: SuiteModel, net) -> None:
    """One loaded model's cells: each sampled (timed), then scored and stored."""
    plan, main, progress = run.plan, run.world.is_main, run.progress
    cells = plan.grid(model.name)
    for cell in cells:      # NFE that depend on the model (edm-heun: 2N + 1 where the path ends short of sigma 0)
        nfe = cell_nfe(cell, net)
        if nfe is not None and cell.label in progress.pending:
            progress.expect(cell.label, nfe * run.x0.shape[0] * plan.repeats + search_work(cell, run.x0.shape[0], net))
    threads = threads_for(net, run.threads, run.device)
    torch.set_num_threads(threads)     # for this model's cells, reference flow and solution (restored by run_suite)
    with run.timed("sampling"):
        batch = plan.batch_size if not plan.auto_batch else probed_batch_size(
            model.name, net, run.x0, plan.batch_size, run.device, run.world, run.say, seed=plan.seeds[0])
    scope: dict = {}
    reference: list = []      # the model's own ODE solution for solver_error, made when a cell first needs it
    if main:
        progress.status(f"{model.name}: reference flow")
        with run.timed("metrics"):
            scope, plot = run.evaluation.model_scope(model.kind, net, run.x0, run.say, list(plan.seeds))
        progress.finish(scope_key(model), run.evaluation.model_scope_work(model.kind, run.x0))
        if plot is not None:
            run.trajectories[model.name] = plot
    images = run.evaluation.images
    for cell in cells:
        if cell.label in run.resumed:
            if main:
                _keep(run, cell.label)
            continue
        progress.status(cell.label)
        load_start = load_average()
        with run.timed("sampling"):
            sampled = sample_cell(net, run.x0, cell, list(plan.seeds), batch, plan.repeats, run.device,
                                  run.world, extract=images.extract if images is not None else None,
                                  precision=plan.precision, compiled=run.base.get("compile", "off") != "off",
                                  initial=plan.problem.initial)
        shared, shared_error = None, None
        if run.evaluation.sharing and sampled.error is None:   # every process takes a share of the k-NN work
            with run.timed("metrics"):
                shared, shared_error = run.evaluation.shared_metrics(sampled.features, run.world)
        if not main:
            continue
        sampled.error = sampled.error or shared_error
        sampled.fields.update(threads=threads, load_start=load_start, load_end=load_average())
        progress.finish(cell.label, None if sampled.error is not None else
                        sampled.fields["nfe"] * run.x0.shape[0] * plan.repeats
                        + sampled.fields.get("grid_search_nfe", 0) * sampled.fields.get("grid_search_rows", 0))
        exact, why = None, None
        if ode_cell(cell) and sampled.error is None:   # what deterministic ODE solvers approximate
            if not reference:
                progress.status(f"{model.name}: reference solution")
                with run.timed("metrics"):
                    made, made_why, work = run.evaluation.exact(model.kind, net, run.x0, batch, run.say,
                                                                list(plan.seeds))
                reference.append((made, made_why))
                progress.finish(exact_key(model), work)
            exact, why = reference[0]
        with run.timed("metrics"):
            record = _score(run, cell, sampled, scope, getattr(net, "notes", None), exact, shared)
        busy = busy_note(load_start, sampled.fields["load_end"])
        for note in (why, busy) if record["status"] == "ok" else ():
            if note is not None:
                record["notes"] = "; ".join(filter(None, [record.get("notes", run.base.get("notes")), note]))
        key = _store(run, record, cell.fields(), model)
        if record["status"] == "ok" and images is not None:
            run.grid[cell.label] = (model.name, float(record["nfe"]), sampled.x[:GRID_SAMPLES].numpy())
        if record["status"] == "ok" and plan.save_samples:
            run.store.write_samples(key, sample_arrays(sampled.x, plan.seeds, images is not None))
    progress.finish(exact_key(model), None)    # no cell needed the reference solution after all


def wanted_cells(plan: Plan, base: dict, identities: dict[str, ModelIdentity], world: World) -> list[Wanted]:
    """What each stored cell must be to stand for a cell of this run (and the independent row): its key from the
    rows' shared columns ``base`` and the cell, measured alike (device, timing protocol, replicates, batch plan),
    solver_error filled where a reference solution failed before. Each carries the key columns this run writes, which
    a stored record must hold to be kept (its file's name is not trusted). Used by the run and by ``--dry-run``."""
    timing = timing_protocol(plan.repeats, world)
    planned = batch_plan(plan.num_samples, plan.batch_size, world)[0]
    wanted = []
    if plan.independent_row:
        # an image suite's independent row records the held-out split's sample count, not the run's
        wanted.append(Wanted.of(INDEPENDENT, {**base, **INDEPENDENT_FIELDS, "model_id": None},
                                {"bootstrap": plan.bootstrap}, own=("n_samples",)))
    for model in plan.models:
        identity = identities[model.name]
        if not identity.resumable:
            continue
        for cell in plan.grid(model.name):
            equal = {"device": base["device"], "timing": timing, "bootstrap": plan.bootstrap}
            if plan.threads is not None:   # asked for: a cell timed on other threads is timed again
                equal["threads"] = plan.threads
            if not plan.auto_batch:
                equal["batch_size"] = planned   # another batch plan: rk45's steps (and NFE) would differ
            # solver_error left empty by a failed reference solution is computed again
            filled = ("solver_error",) if "solver_error" in plan.metrics and model.kind != "one-step" \
                and ode_cell(cell) else ()
            wanted.append(Wanted.of(cell.label, {**base, **cell.fields(), "model_id": identity.id}, equal, filled))
    return wanted


def _score(run: Sweep, cell, sampled, scope: dict, notes: str | None, exact: torch.Tensor | None,
           shared: dict | None) -> dict:
    """The cell's record: its sampling columns and metrics (``shared``: those all processes computed), or its
    error; ``notes``: what the model's loader wants each of its rows to say."""
    error = sampled.error
    if error is None:
        try:
            values = run.evaluation.cell_metrics(run.evaluation.inputs(run.x0.cpu(), sampled.x, sampled.features,
                                                                        sampled.logits, exact), shared,
                                                 skip=run.plan.suite.skipped(cell))
        except Exception as exc:  # a failed cell is a row with its error; the sweep goes on
            error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        run.say(f"{cell.label}: {error}")
        record = {**cell.fields(), **empty_metrics(run.plan.metrics), "status": "failed", "error": error}
    else:
        record = {**cell.fields(), **sampled.fields, **values, **scope, "bootstrap": run.plan.bootstrap,
                  "status": "ok", "error": None}
    if notes:
        record["notes"] = "; ".join(filter(None, [run.base.get("notes"), notes]))
    return record


def _model_fields(run: Sweep, model: SuiteModel | None) -> dict:
    if model is None:
        return {"model_id": None}
    identity = run.identities[model.name]
    return {"model_kind": model.kind, "model_source": identity.source, "model_id": identity.id,
            "model_checkpoint": identity.checkpoint or run.cache_entries.get(model.name),
            **run.training.get(model.name, {})}


def _training_fields(source, identity: ModelIdentity, cache: Cache) -> dict:
    """A loaded model's training cost columns: what making the cache entries its load used cost (a recipe's
    chain, :meth:`Cache.chain_cost`); empty, with the reason in train_cost, for a model rfbench did not train."""
    if isinstance(source, Recipe):
        cost, text = cache.chain_cost()
    else:
        cost, text = None, f"not counted: not trained by rfbench ({identity.source})"
    return {"train_nfe": None if cost is None else cost.nfe,
            "train_wall_s": None if cost is None else round(cost.seconds, 3), "train_cost": text}


def _store(run: Sweep, record: dict, fields: dict, model: SuiteModel | None = None) -> str:
    """Write a row (the run's shared columns, the model's, the record) under the key of its cell (``fields``: the
    cell's columns; the record may say it holds fewer samples, as the independent row of an image suite does)."""
    identity = _model_fields(run, model)
    key = cell_key({**run.base, **fields, **identity})
    run.keys.append(run.store.write({**run.base, **identity, **record, "order": len(run.keys)}, key=key).stem)
    return key


def _keep(run: Sweep, label: str) -> bool:
    if label not in run.resumed:
        return False
    run.keys.append(run.resumed[label])
    return True


def run_suite(suite: Suite | Plan, out_dir: str | Path, config: RunConfig | None = None, *, progress: bool = True,
              plots: bool = True, log: Callable[[str], None] | None = None, world: World | None = None,
              plot_format: str = "png", **options) -> RunOutput:
    """Run every cell of a suite (or of a :class:`Plan`) and write ``results.csv``, ``results.md`` and plots into
    ``out_dir``. ``config`` (or its fields as keyword ``options``: device, cache_dir, resume, extractor_options,
    ...) holds the run's options.

    ``resume``: a cell already finished in ``out_dir/cells`` under the same conditions (:mod:`rfbench.results.resume`)
    is kept and not computed again; a model all of whose cells are kept is not even loaded. ``world``: the
    processes of a torchrun run; each samples its share of every cell, rank 0 trains (the others then load from the
    cache), computes the metrics and writes; the others return an empty frame.
    """
    config = dataclasses.replace(config or RunConfig(), **options)
    device = resolve_device(config.device)
    with using_threads(training_threads(config.threads, device)):     # each model then samples on threads_for(...)
        return _run_suite(suite, out_dir, config, progress=progress, plots=plots, log=log, world=world,
                          plot_format=plot_format)


def _run_suite(suite: Suite | Plan, out_dir: str | Path, config: RunConfig, *, progress: bool, plots: bool,
               log: Callable[[str], None] | None, world: World | None, plot_format: str) -> RunOutput:
    started = time.perf_counter()
    timings = dict.fromkeys(TIMINGS, 0.0)
    plan = suite if isinstance(suite, Plan) else make_plan(suite, config)
    world = world or World()
    main = world.is_main
    device = resolve_device(config.device)
    store = ResultStore(out_dir, metric_columns(plan))
    say = (log or (lambda msg: tqdm.write(msg))) if main else (lambda msg: None)
    shown = Progress(enabled=progress and main, say=say)
    # the bar counts model evaluations (rfbench.progress); its ETA is the work left at the run's average rate.
    # Without a terminal (a log file) it is written every 10 s, not every 0.1 s
    shown.bar = tqdm(total=0, desc=plan.name, disable=not shown.enabled, unit="NFE", unit_scale=True, smoothing=0,
                     mininterval=0.1 if shown.tty else 10, dynamic_ncols=True)
    for line in plan.skipped:
        say(f"note: {line}")
    shown.status("setting up")
    cache = Cache(config.cache_dir, log=say, progress=shown)
    seeds = list(plan.seeds)
    # rank 0 scores every cell on the full x0; the others make the rows of their own batches (SeedRows)
    x0 = plan.problem.initial(seeds).to(device) if main else SeedRows(plan.problem.initial, seeds, device)
    with _timed(timings, "metrics"):
        reference = plan.problem.reference(plan.num_samples) if main else None

    def build(first: bool, chosen: str | None):
        # the other processes use the extractor rank 0 ended with (no fallback of their own)
        scored = plan if first or chosen is None else dataclasses.replace(plan, extractor=chosen,
                                                                          fallback_extractor=None)
        return image_eval(scored, cache.root, device, dict(config.extractor_options), say, images=reference,
                          reference=first, radii=not world.active)

    with _timed(timings, "metrics"):
        images = main_first(world, build, share=lambda ev: ev.extractor.name if ev is not None else None)
        evaluation = Evaluation(plan, reference, images)
        shared = world.all_objects(evaluation.shared if main else None)[0] if world.active else ()
        if shared:      # precision/recall's k-NN work split over the processes, reference radii included
            evaluation.share_reference(world, device, shared)
    # a factory's id covers the weights it loads: loaded now (by rank 0, which alone writes rows) for resume to decide;
    # every model of the whole plan, whose cells a shard's table gathers
    identities = {m.name: m.source.identify(LoadContext(plan.suite, cache, device, say)) if main
                  else m.source.identity(plan.suite) for m in plan.unsharded.models}
    base = {"suite": plan.name, "suite_version": plan.version, "n_samples": plan.num_samples, "seed": seeds[0],
            "seeds": f"{seeds[0]}-{seeds[-1]}", **evaluation.fields,
            **provenance(device_name(device), str(x0.dtype).replace("torch.", "")), **network_fields(config)}
    notes = list(plan.notes) + evaluation.notes
    if notes:
        base["notes"] = "; ".join(notes)

    def load(model: SuiteModel):
        def step():
            cache.last_key = None
            cache.start_chain()
            try:
                net = model.source.load(LoadContext(plan.suite, cache, device, say))
                net = prepare(net, compile_mode=config.compile, channels_last=config.channels_last)
            except Exception as exc:
                return None, f"{type(exc).__name__}: {exc}"
            run.training[model.name] = _training_fields(model.source, run.identities[model.name], cache)
            if cache.last_key is not None:      # a trained model: the cache entry it came from
                run.cache_entries[model.name] = cache.last_key
            return net, None
        return main_then_others(world, step, "load")

    run = Sweep(plan, x0, base, identities, store, evaluation, load, device, world, say, shown, timings=timings,
                threads=config.threads)
    if config.resume:
        run.resumed = world.all_objects(_resumable(run, columns=metric_columns(plan)) if main else {})[0]
        if run.resumed:
            say(f"resuming: {len(run.resumed)} finished cell(s) found in {store.cells_dir} are kept, not computed "
                f"again (--force recomputes them)")
    expect_work(run)
    if shown.enabled:
        expect_training(run)
    sweep(run)
    shown.bar.close()
    if not main:
        return RunOutput(frame=pd.DataFrame(), timings=_total(timings, started))
    # a shard's table: every cell of the whole plan that the shared folder holds (rfbench.suites.shards)
    with table_keys(run, wanted_cells(plan.unsharded, base, identities, world) if plan.shard else []) as keys:
        frame = store.load(keys=keys + _scored(store, plan, keys))
        files = list(write_tables(frame, out_dir))
        if plots:
            quality = plan.quality_metric
            lower = column_directions().get(quality) != "higher"
            files += plot_quality_vs_costs(frame, Path(out_dir), quality, lower, plot_format)
            if "solver_error" in frame and frame["solver_error"].notna().any():   # log-log: the slope is the order
                files += plot_quality_vs_costs(frame, Path(out_dir), "solver_error", True, plot_format)
            apart = ((x0[:PLOT_PATHS].cpu().numpy(), plan.problem.independent_target(seeds[:PLOT_PATHS]).numpy())
                     if plan.suite.independent_row and run.trajectories else None)
            files += plot_paths(run.trajectories, reference.numpy(), apart, out_dir, plot_format,
                                max_paths=PLOT_PATHS)
            files += plot_model_grids(run.grid, Path(out_dir), plot_format, rows=GRID_ROWS, per_row=GRID_SAMPLES)
    return RunOutput(frame=frame, files=files, trained=list(cache.trained), timings=_total(timings, started),
                     kept=list(run.resumed))


def _total(timings: dict[str, float], started: float) -> dict[str, float]:
    return {**timings, "total": time.perf_counter() - started}


def _scored(store: ResultStore, plan: Plan, keys: list[str]) -> list[str]:
    """Rows that ``rfbench score`` added to this folder for this suite: they stay in its table."""
    return [key for key, rec in store.records().items() if key not in keys and rec.get("suite") == plan.name
            and rec.get("suite_version") == plan.version and is_scored(rec)]


def _resumable(run: Sweep, columns: list[str]) -> dict[str, str]:
    """The cells this run may keep from its folder: same key, measured alike (see :mod:`rfbench.results.resume`)."""
    wanted = wanted_cells(run.plan, run.base, run.identities, run.world)
    kept = finished_cells(run.store, wanted, columns, run.say, set_aside=True)
    return with_samples(run.store, kept, exempt=(INDEPENDENT,)) if run.plan.save_samples else kept


"""Run a suite: load or train each model, sweep its cells, compute metrics, store each cell as it finishes."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from baselines import BASELINES
from baselines.cache import Cache
from baselines.published import file_identity, load_checkpoint_model
from rfbench.distributed import PeerFailed, World, batch_plan
from rfbench.metrics import METRICS, PR_K, GaussianStats, MetricInput, column_directions, knn_radii
from rfbench.metrics.features import EXTRACTORS, FeatureExtractor, NoInceptionWeightsError, quantize
from rfbench.metrics.reference import ReferenceKey, load_reference_file, reference_features, reference_stats
from rfbench.models.checkpoint import sha1_files
from rfbench.results import ResultStore, cell_key, provenance, write_tables
from rfbench.results.plots import plot_model_grids, plot_quality_vs_costs, plot_trajectories
from rfbench.samplers import SOLVERS, sample
from rfbench.suites.base import Cell, Suite
from rfbench.suites.batching import FRACTION, LIMIT, auto_batch_size

PLOT_PATHS = 300  # trajectories drawn per model
GRID_SAMPLES = 16  # images per row of samples_MODEL.png
GRID_ROWS = 4      # rows (distinct NFEs) per model in samples_MODEL.png
WARMUP_EVALS = 2   # untimed model evaluations at a cell's batch shape before its timed runs (kernels, allocator)


FEATURE_METRICS = ("kid", "precision_recall")   # need the reference features, not only their statistics


@dataclass
class ImageEval:
    """What the image metrics compare samples with: the extractor and the reference set's features."""

    extractor: FeatureExtractor
    reference_features: torch.Tensor | None   # None: a reference file with statistics only (or not rank 0)
    reference_stats: GaussianStats | None
    fields: dict  # provenance columns: extractor, reference
    reference_radii: torch.Tensor | None = None  # precision/recall's k-NN radii of the reference, once per run

    def extract(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and logits of samples in [-1, 1], quantised to uint8 as they would be saved."""
        return self.extractor.extract(quantize(z1))

    def inputs(self, z0: torch.Tensor, z1: torch.Tensor, features: torch.Tensor | None = None,
               logits: torch.Tensor | None = None, bootstrap: int = 0) -> MetricInput:
        if features is None:
            features, logits = self.extract(z1)
        return MetricInput(z0=z0, z1=z1, features=features, logits=logits,
                           reference_features=self.reference_features, reference_stats=self.reference_stats,
                           reference_radii=self.reference_radii, bootstrap=bootstrap)


def _image_eval(suite: Suite, cache: Cache, device: torch.device, options: dict | None,
                say: Callable[[str], None], images: torch.Tensor | None = None,
                reference: bool = True) -> ImageEval | None:
    """The extractor and the reference set's features; ``images``: the reference images when already loaded.
    ``reference=False`` (ranks other than 0, which only extract their samples' features): the extractor only."""
    if suite.extractor is None:
        return None
    problem = suite.problem
    options = dict(options or {})
    try:
        extractor = EXTRACTORS[suite.extractor](cache.root, device, log=say, problem=problem, **options)
    except NoInceptionWeightsError as exc:
        if suite.fallback_extractor is None or options.get("weights") is not None:
            raise
        say(f"{exc}\nscoring with the {suite.fallback_extractor} extractor instead (recorded in the extractor column)")
        extractor = EXTRACTORS[suite.fallback_extractor](cache.root, device, log=say, problem=problem)
    if not reference:
        return ImageEval(extractor, None, None, {})
    if suite.reference_file is not None:
        features_np, stats, held = load_reference_file(suite.reference_file, extractor.dim)
        features = None if features_np is None else torch.from_numpy(features_np)
        digest = sha1_files(suite.reference_file)[:12]     # the content, not the name
        described = f"{Path(suite.reference_file).name} (sha1 {digest}, given: {held})"
    else:
        images = problem.reference() if images is None else images
        key = ReferenceKey(dataset=problem.dataset, split=problem.reference_split, extractor=extractor.identity,
                           resize_mode=extractor.resize_mode, resolution=problem.shape[-1],
                           fingerprint=problem.fingerprint(problem.reference_split, images)[:12])
        features_np, _ = reference_features(key, cache.root, lambda: extractor.features(quantize(images)).numpy())
        features = torch.from_numpy(features_np)
        stats, path = reference_stats(key, cache.root, lambda: [features.numpy()])
        if stats.n != len(images):
            raise ValueError(f"cached reference statistics {path} were computed from {stats.n} images, but "
                             f"{problem.dataset}/{problem.reference_split} now has {len(images)}; remove the file")
        described = f"{path.name} ({len(images)} images)"
    fields = {"extractor": f"{extractor.name} ({extractor.checkpoint}, {extractor.resize_mode})",
              "reference": described}
    radii = (knn_radii(features, PR_K, device=device)
             if features is not None and "precision_recall" in suite.metrics else None)
    return ImageEval(extractor, features, stats, fields, radii)


@dataclass
class RunOutput:
    frame: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)


def resolve_device(device: str | None) -> torch.device:
    """``None`` or "auto" -> cuda when there is one, else cpu; anything else must be a valid torch device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_suite(suite: Suite, out_dir: str | Path, *, device: str | torch.device | None = None,
              cache_dir: str | Path | None = None, progress: bool = True, plots: bool = True,
              log: Callable[[str], None] | None = None, extractor_options: dict | None = None,
              world: World | None = None, resume: bool = True, plot_format: str = "png") -> RunOutput:
    """Run every cell of ``suite`` and write ``results.csv``, ``results.md`` and plots into ``out_dir``.

    ``resume``: a cell already finished in ``out_dir/cells`` under the same conditions (:func:`_finished_cells`)
    is kept and not computed again; a model all of whose cells are kept is not even loaded. Failed cells are
    computed again. ``resume=False`` recomputes everything.

    ``extractor_options`` go to the image suite's feature extractor (for ``inception``: ``weights``, ``mode``).
    ``world``: the processes of a torchrun run (:mod:`rfbench.distributed`); each samples its share of every cell,
    rank 0 trains (the others then load from the cache), computes the metrics and writes; the others return an
    empty frame.

    A cell whose sampler fails (NaN samples, a solver that cannot proceed) is recorded with its error and the sweep
    goes on; every finished cell is on disk before the next one starts.
    """
    world = world or World()
    main = world.is_main
    device = resolve_device(str(device) if device is not None else None)
    for model_name in suite.models:  # an unknown model is a mistake in the suite: say so before any work
        BASELINES[model_name]
    out_dir = Path(out_dir)
    store = ResultStore(out_dir)
    bar = tqdm(total=len(suite.cells) + int(suite.independent_row), desc=suite.name,
               disable=not (progress and main), unit="cell", dynamic_ncols=True)
    say = (log or (lambda msg: tqdm.write(msg))) if main else (lambda msg: None)
    cache = Cache(cache_dir, log=say)

    seeds = list(suite.seeds)
    x0 = suite.problem.initial(seeds).to(device)
    reference = suite.problem.reference(suite.num_samples) if main else None
    def image_eval(first: bool, chosen: str | None) -> ImageEval | None:
        # the other processes use the extractor rank 0 ended with (no fallback of their own)
        scored = suite if first or chosen is None else dataclasses.replace(suite, extractor=chosen,
                                                                           fallback_extractor=None)
        return _image_eval(scored, cache, device, extractor_options, say, images=reference, reference=first)

    images = _main_first(world, image_eval, share=lambda ev: ev.extractor.name if ev is not None else None)
    base = {"suite": suite.name, "suite_version": suite.version, "n_samples": suite.num_samples,
            "seed": seeds[0], "seeds": f"{seeds[0]}-{seeds[-1]}", **(images.fields if images else {}),
            **provenance(device_name(device), str(x0.dtype).replace("torch.", ""))}
    notes = list(suite.notes)
    if images is not None and images.extractor.num_classes is None and "inception_score" in suite.metrics:
        notes.append(f"IS empty: {images.extractor.logits_note}")
    if images is not None and main and images.reference_features is None:   # a reference given as mu/sigma only
        dropped = [m for m in suite.metrics if m in FEATURE_METRICS]
        suite = dataclasses.replace(suite, metrics=tuple(m for m in suite.metrics if m not in FEATURE_METRICS))
        notes.append(f"{', '.join(dropped)} empty: the reference file holds statistics only, not features")
        for name in dropped:   # the columns stay, empty
            base.update(dict.fromkeys(METRICS[name].columns))
    if notes:
        base["notes"] = "; ".join(notes)
    keys: list[str] = []
    trajectories: dict[str, tuple[str, np.ndarray]] = {}
    grid: dict[str, tuple[str, float, np.ndarray]] = {}   # cell label -> (model, NFE, first images)
    resumed = _finished_cells(suite, store, base, world, say) if resume else {}
    if resumed:
        say(f"resuming: {len(resumed)} finished cell(s) found in {store.cells_dir} are kept, not computed again "
            f"(--force recomputes them)")

    def store_record(record: dict, key: str | None = None) -> None:
        record["order"] = len(keys)
        keys.append(store.write(record, key=key).stem)
        bar.update(1)

    def keep(label: str) -> bool:
        if label not in resumed:
            return False
        keys.append(resumed[label])
        bar.update(1)
        return True

    if suite.independent_row and main and not keep(INDEPENDENT):
        store_record(_independent_record(suite, x0.cpu(), reference, seeds, base, images),
                     key=cell_key({**base, **INDEPENDENT_FIELDS}))

    for model_name in suite.models:
        cells = suite.grid(model_name)
        todo = [cell for cell in cells if cell.label not in resumed]
        if not todo:
            for cell in cells if main else ():
                keep(cell.label)
            continue
        bar.set_postfix_str(f"{model_name}: loading")
        baseline = BASELINES[model_name]
        model, errors = _load_model(suite, model_name, cache, device, world)
        if errors:  # record the failure for each of its cells and go on with the next model
            say(f"{model_name}: could not load or train: {errors[0]}")
            for cell in cells if main else ():
                if not keep(cell.label):
                    store_record({**base, **_cell_fields(cell), **_empty_metrics(suite),
                                  "status": "failed", "error": f"model: {errors[0]}"})
            continue
        cell_suite = suite if not suite.auto_batch else dataclasses.replace(
            suite, batch_size=_auto_batch(suite, model_name, model, x0, device, world, say))
        model_values: dict = {}
        if main:
            bar.set_postfix_str(f"{model_name}: reference flow")
            model_values, plot = _model_scope(suite, baseline.kind, model, x0, say)
            if plot is not None:
                trajectories[model_name] = plot
        for cell in cells:
            if cell.label in resumed:
                if main:
                    keep(cell.label)
                continue
            bar.set_postfix_str(cell.label)
            record, samples = _run_cell(cell_suite, cell, model, x0, seeds, reference, device, images, world)
            if not main:
                continue
            if samples is not None and images is not None:
                grid[cell.label] = (model_name, float(record["nfe"]), samples[:GRID_SAMPLES].numpy())
            if record["status"] != "ok":
                say(f"{cell.label}: {record['error']}")
            else:
                record.update(model_values)
            row = {**base, **record, "model_checkpoint": cache.keys.get(model_name)}
            if getattr(model, "notes", None):     # what the loader wants every row of the model to say
                row["notes"] = "; ".join(filter(None, [base.get("notes"), model.notes]))
            store_record(row)
    bar.close()
    if not main:
        return RunOutput(frame=pd.DataFrame())

    frame = store.load(keys=keys)
    files = list(write_tables(frame, out_dir))
    if plots:
        quality = suite.quality_metric
        lower = column_directions().get(quality) != "higher"
        ext = plot_format
        files += plot_quality_vs_costs(frame, out_dir, quality, lower, ext)
        path = plot_trajectories(trajectories, reference.numpy(), out_dir / f"trajectories.{ext}",
                                 max_paths=PLOT_PATHS)
        files += [path] if path is not None else []
        files += plot_model_grids(grid, out_dir, ext, rows=GRID_ROWS, per_row=GRID_SAMPLES)
    return RunOutput(frame=frame, files=files, trained=list(cache.trained))


INDEPENDENT = "independent"
INDEPENDENT_FIELDS = {"model": "independent", "solver": "none", "steps": None, "options": ""}


def _finished_cells(suite: Suite, store: ResultStore, base: dict, world: World,
                    say: Callable[[str], None] = print) -> dict[str, str]:
    """Cell label -> stored key of every cell that a resumed run keeps (decided by rank 0, shared with all).

    Kept: status ok, the same cell key (suite version, samples, seeds, extractor, reference, solver, steps,
    options), batch size, device and timing protocol, the same checkpoint file (sha1) or, for a trained model, not
    a checkpoint's numbers, every column the suite's metrics fill now (a cell from before a metric gained a column,
    such as a standard error, is computed again), and the same number of resampling replicates (``bootstrap``:
    the fid/is bootstrap, recall's half-sampling, kid's jackknife). Whatever goes wrong while
    deciding (an unreadable cell, a checkpoint that cannot be read) keeps nothing: every cell is computed again."""
    found: dict[str, str] = {}
    if world.is_main:
        try:
            found = _finished(suite, store, base, world)
        except Exception as exc:
            say(f"resume: could not read the finished cells ({type(exc).__name__}: {exc}); computing every cell")
            found = {}
    return world.all_objects(found)[0]


def _finished(suite: Suite, store: ResultStore, base: dict, world: World) -> dict[str, str]:
    done = {key: rec for key, rec in store.records().items() if rec.get("status") == "ok"}
    found: dict[str, str] = {}
    identities: dict[str, str] = {}
    planned = batch_plan(suite.num_samples, suite.batch_size, world)[0]
    timing = _timing_protocol(suite, world)
    columns = [col for name in suite.metrics for col in METRICS[name].columns]

    def current(rec: dict) -> bool:
        return all(col in rec for col in columns) and rec.get("bootstrap", 0) == suite.bootstrap

    for cell in suite.cells if done else ():
        key = cell_key({**base, **_cell_fields(cell)})
        rec = done.get(key)
        if rec is None or rec.get("device") != base.get("device") or rec.get("timing") != timing:
            continue     # another device or timing protocol: its wall-clock would not compare
        if not suite.auto_batch and rec.get("batch_size") not in (None, planned):
            continue     # another batch plan: rk45's steps (and NFE) would differ
        if not current(rec):
            continue     # computed before a column existed, or without the standard errors this run asks for
        checkpoint = suite.checkpoint(cell.model)
        if checkpoint is not None:
            if cell.model not in identities:
                identities[cell.model] = file_identity(checkpoint) if Path(checkpoint).exists() else ""
            if rec.get("model_checkpoint") != identities[cell.model]:
                continue   # another file under the same name
        elif " (sha1 " in str(rec.get("model_checkpoint")):
            continue       # a checkpoint file's numbers; this run trains (or loads from the cache) the model
        found[cell.label] = key
    key = cell_key({**base, **INDEPENDENT_FIELDS})
    if suite.independent_row and key in done and current(done[key]):
        found[INDEPENDENT] = key
    return found


def _main_first(world: World, build: Callable[[bool, object], object],
                share: Callable[[object], object] = lambda result: None):
    """``build(True, None)`` on rank 0, then ``build(False, share(rank 0's result))`` on the others, which thus find
    what rank 0 cached (a trained extractor) instead of training it at the same time. An exception on one process
    is raised there and becomes :class:`PeerFailed` on the others, so none waits forever for one that stopped."""
    result, error = None, None
    if world.is_main:
        try:
            result = build(True, None)
        except Exception as exc:
            error = exc
        failed = world.check(None if error is None else f"{type(error).__name__}: {error}", "rank 0")
        if error is not None:
            raise error
        world.all_objects(share(result))
    else:
        failed = world.check(None, "rank 0")
        if failed:
            raise PeerFailed(failed[0])
        shared = world.all_objects(None)[0]
        try:
            result = build(False, shared)
        except Exception as exc:
            error = exc
    if world.active:
        failed = world.check(None if error is None else f"{type(error).__name__}: {error}", "others")
        if error is not None:
            raise error
        if failed:
            raise PeerFailed(failed[0])
    return result


def _auto_batch(suite: Suite, model_name: str, model, x0: torch.Tensor, device: torch.device, world: World,
                say: Callable[[str], None]) -> int | None:
    """``--batch-size auto``: the probed batch size on CUDA (the smallest over the processes, so that all use the
    same batches); on the CPU the suite's own batch size."""
    if device.type != "cuda":
        say(f"{model_name}: --batch-size auto probes GPU memory; on the CPU the suite's batch size "
            f"({suite.batch_size or 'all samples at once'}) is kept")
        return suite.batch_size
    try:
        size, error = auto_batch_size(model, x0[:1], device, limit=min(LIMIT, x0.shape[0])), None
    except Exception as exc:   # every process must reach the collective below, whatever happened here
        size, error = None, f"{type(exc).__name__}: {exc}"
    shared = world.all_objects((size, error))
    errors = [e for _, e in shared if e is not None]
    if errors:
        say(f"{model_name}: the batch size probe failed ({errors[0]}); using the suite's batch size "
            f"({suite.batch_size or 'all samples at once'})")
        return suite.batch_size
    size = min(s for s, _ in shared)
    say(f"{model_name}: batch size {size} (auto: the largest power of two whose evaluation needs at most "
        f"{FRACTION:.0%} of the free GPU memory)")
    return size


def _load_model(suite: Suite, model_name: str, cache: Cache, device: torch.device,
                world: World) -> tuple[object, list[str]]:
    """The model from its checkpoint or the cache (trained there first when missing: by rank 0 alone, before the
    other processes load it). Returns the model and the errors (empty when every process has it)."""
    checkpoint = suite.checkpoint(model_name)

    def load():
        try:
            if checkpoint is not None:
                model = load_checkpoint_model(model_name, checkpoint, suite, device)
                if world.is_main:
                    cache.keys[model_name] = file_identity(checkpoint)
                return model, None
            return BASELINES[model_name].load_or_train(suite, cache, device), None
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    model, error = load() if world.is_main else (None, None)
    errors = world.check(error, "load")
    if errors or not world.active:
        return model, errors
    if not world.is_main:
        model, error = load()
    return model, world.check(error, "load")


def _cell_fields(cell: Cell) -> dict:
    return {"model": cell.model, "solver": cell.solver, "steps": cell.steps,
            "options": ",".join(f"{k}={v}" for k, v in cell.options)}


def _empty_metrics(suite: Suite) -> dict:
    out: dict = {"nfe": None, "wall_clock_s": None, "samples_per_s": None, "ms_per_nfe": None}
    for name in suite.metrics:
        out.update(dict.fromkeys(METRICS[name].columns))
    return out


def _independent_record(suite: Suite, x0: torch.Tensor, reference: torch.Tensor, seeds: list[int],
                        base: dict, images: ImageEval | None) -> dict:
    """The independent coupling (X0, X1 drawn separately): the reference row of the coupling metrics, and for
    image metrics the floor that a finite sample of real images gives."""
    x1 = suite.problem.independent_target(seeds)
    n = x1.shape[0]            # image suites: at most the held-out split's size (distinct images only)
    values = _cell_metrics(suite, _metric_input(x0[:n], x1, reference, images, suite.bootstrap))
    fewer = {} if n == len(seeds) else {
        "n_samples": n, "seeds": f"{seeds[0]}-{seeds[n - 1]}",
        "notes": "; ".join(filter(None, [base.get("notes"), f"{n} samples: every image of the held-out split once"]))}
    return {**base, "model": "independent", "solver": "none", "steps": None, "options": "", "nfe": 0,
            "wall_clock_s": None, "samples_per_s": None, **values, "bootstrap": suite.bootstrap, "status": "ok",
            "error": None, **fewer}


def _metric_input(z0: torch.Tensor, z1: torch.Tensor, reference: torch.Tensor,
                  images: ImageEval | None, bootstrap: int = 0) -> MetricInput:
    if images is None:
        return MetricInput(z0=z0, z1=z1, reference=reference, bootstrap=bootstrap)
    return images.inputs(z0, z1, bootstrap=bootstrap)


def _cell_metrics(suite: Suite, inputs: MetricInput) -> dict:
    """The suite's cell-scope metrics on one coupling; model-scope columns (straightness) stay empty here and are
    filled per model by :func:`_model_scope` (the independent coupling has no flow, so they stay empty)."""
    values: dict = {}
    for name in suite.metrics:
        metric = METRICS[name]
        values.update(metric(inputs) if metric.scope == "cell" else dict.fromkeys(metric.columns))
    return values


def _model_scope(suite: Suite, kind: str, model, x0: torch.Tensor,
                 say: Callable[[str], None]) -> tuple[dict, tuple[str, np.ndarray] | None]:
    """Model-scope metrics (straightness) on a fine rk4 reference trajectory from the suite's x0, and the
    trajectories to plot. A one-step model is not a flow: its metrics stay empty and its plot is its one step."""
    metrics = [METRICS[name] for name in suite.metrics if METRICS[name].scope == "model"]
    values: dict = {col: None for metric in metrics for col in metric.columns}
    plottable = x0.ndim == 2 and x0.shape[1] == 2      # trajectories are drawn for 2D problems
    if kind == "one-step":
        if not plottable:
            return values, None
        try:
            traj = sample(model, x0[:PLOT_PATHS], "euler", 1, trajectory=True).trajectory
        except Exception:  # the cell itself will record the failure
            return values, None
        return values, ("euler, 1 step", traj.states.numpy())
    steps = suite.straightness_steps
    if not metrics and not plottable:
        return values, None
    x0 = x0[:suite.straightness_samples] if suite.straightness_samples else x0
    try:
        result = sample(model, x0, "rk4", steps, trajectory=True)
    except Exception as exc:
        say(f"reference trajectory (rk4, {steps} steps) failed: {type(exc).__name__}: {exc}")
        return values, None
    traj = result.trajectory
    inputs = MetricInput(z0=x0.cpu(), z1=result.x.cpu(), times=traj.times, states=traj.states,
                         velocities=traj.velocities)
    for metric in metrics:
        values.update(metric(inputs))
    if metrics:
        values["model_metrics_solver"] = f"rk4/{steps}" + (
            f", first {x0.shape[0]} seeds" if suite.straightness_samples else "")
    return values, ((f"rk4, {steps} steps", traj.states[:, :PLOT_PATHS].numpy()) if plottable else None)


def _run_cell(suite: Suite, cell: Cell, model, x0: torch.Tensor, seeds: list[int], reference: torch.Tensor | None,
              device: torch.device, images: ImageEval | None = None,
              world: World | None = None) -> tuple[dict | None, torch.Tensor | None]:
    """Sample one cell (timed: nothing else in the timed region) and compute its cell-scope metrics; failures
    become a recorded row, never an exception. Returns the record and the samples (None when it failed); with
    several processes each samples its share, and rank 0 alone gets the record (the others get None, None)."""
    world = world or World()
    options = dict(cell.options)
    stochastic = SOLVERS[cell.solver].is_stochastic(options)
    fields = _cell_fields(cell)

    def failed(error: str) -> tuple[dict | None, None]:
        record = {**fields, **_empty_metrics(suite), "status": "failed", "error": error}
        return (record if world.is_main else None), None

    size, mine = batch_plan(x0.shape[0], suite.batch_size, world)
    share = _sample_share(model, x0, cell, seeds if stochastic else None, mine, device, suite.timing_repeats,
                          world)
    errors = world.check(share.error, "sample")
    if errors:
        return failed(errors[0])
    features = logits = None
    if images is not None and share.x is not None:
        try:
            features, logits = images.extract(share.x)
        except Exception as exc:
            share.error = f"features: {type(exc).__name__}: {exc}"
    if images is not None:
        errors = world.check(share.error, "features")
        if errors:
            return failed(errors[0])
    shares = world.all_objects(share.summary())
    x = world.cat_rows(share.x)
    if images is not None:
        features, logits = world.cat_rows(features), world.cat_rows(logits)
    if not world.is_main:
        return None, None
    nfe, stats = _combine(shares, size)
    # each timed run ends when its slowest process does; the cell's time is the median over the repeated runs
    wall = statistics.median(max(s["run_times"][r] for s in shares) for r in range(suite.timing_repeats))
    ms_per_nfe = statistics.median(t for s in shares for t in s["ms_per_nfe"])
    try:
        inputs = (images.inputs(x0.cpu(), x, features, logits, bootstrap=suite.bootstrap) if images is not None
                  else _metric_input(x0.cpu(), x, reference, None, suite.bootstrap))
        values = _cell_metrics(suite, inputs)
    except Exception as exc:  # a failed cell is a row with its error; the sweep goes on
        return failed(f"{type(exc).__name__}: {exc}")
    timing = _timing_protocol(suite, world)
    return {**fields, "batch_size": size, "nfe": nfe, "wall_clock_s": wall, "samples_per_s": x0.shape[0] / wall,
            "ms_per_nfe": ms_per_nfe, **values, "bootstrap": suite.bootstrap,
            "solver_stats": ",".join(f"{k}={v}" for k, v in stats.items()), "timing": timing, "status": "ok", "error": None}, x


def _timing_protocol(suite: Suite, world: World) -> str:
    """The ``timing`` column: how a cell's wall-clock was measured (a resumed cell must have been timed alike)."""
    return f"warmup={WARMUP_EVALS}nfe,repeats={suite.timing_repeats},processes={world.size}"


@dataclass
class Share:
    """One process's part of a cell: its samples (first run), per-batch NFE and stats, and its timings."""

    x: torch.Tensor | None = None
    nfes: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    run_times: list = field(default_factory=list)     # seconds per timed run (all of its batches)
    ms_per_nfe: list = field(default_factory=list)    # per batch and run: milliseconds / the batch's NFE
    error: str | None = None

    def summary(self) -> dict:
        return {"nfes": self.nfes, "weights": self.weights, "stats": self.stats, "run_times": self.run_times,
                "ms_per_nfe": self.ms_per_nfe}


def _sample_share(model, x0: torch.Tensor, cell: Cell, seeds: list[int] | None, batches: list[tuple[int, int]],
                  device: torch.device, repeats: int = 1, world: World | None = None) -> Share:
    """Sample the rows of ``batches`` ``repeats`` times, timing each run and each batch (synchronised with the
    device) after ``WARMUP_EVALS`` untimed model evaluations at the batch shape; the samples of the first run are
    kept. All processes start each run together; an error stops the sampling, not the taking part in the
    collectives, so the other processes never wait for this one."""
    world = world or World()
    share = Share()
    xs = []
    try:
        if batches:
            a, b = batches[0]
            t = torch.full((b - a,), 0.5, dtype=x0.dtype, device=x0.device)
            with torch.no_grad():
                for _ in range(WARMUP_EVALS):
                    model(x0[a:b], t)
            _sync(device)
    except Exception:   # left for the timed run, whose sampler checks its input and reports the cause
        pass
    for run in range(repeats):
        world.barrier()
        if share.error is not None:
            share.run_times.append(float("nan"))
            continue
        try:
            start = time.perf_counter()
            for a, b in batches:
                begin = time.perf_counter()
                result = sample(model, x0[a:b], cell.solver, cell.steps,
                                seeds=seeds[a:b] if seeds is not None else None, **dict(cell.options))
                _sync(device)
                share.ms_per_nfe.append(1000 * (time.perf_counter() - begin) / max(result.nfe, 1))
                if run == 0:
                    xs.append(result.x)
                    share.nfes.append(result.nfe)
                    share.weights.append(b - a)
                    share.stats.append({k: v for k, v in result.stats.items() if k not in ("rtol", "atol", "eta")})
            share.run_times.append(time.perf_counter() - start)
            if run == 0:     # off the device batch by batch (the next runs' samples are not kept)
                xs = [x.cpu() for x in xs]
                share.x = torch.cat(xs) if xs else None
        except Exception as exc:
            share.error = f"{type(exc).__name__}: {exc}"
    if share.error is not None:
        share.x = None
    return share


def _combine(shares: list[dict], size: int) -> tuple[float, dict]:
    """The row's NFE and solver stats from every batch of every process (in seed order). Fixed-grid solvers have
    the same NFE for every batch. An adaptive solver's step sizes, hence its samples and NFE, depend on the batch
    (its error norm spans the batch), so the row's NFE (and each numeric solver stat) is then the mean per sample's
    batch, weighted by batch size, and solver_stats gives the batch size, the number of batches and the NFE range."""
    nfes = [n for s in shares for n in s["nfes"]]
    weights = [w for s in shares for w in s["weights"]]
    stats_list = [st for s in shares for st in s["stats"]]
    total = sum(weights)

    def mean(values):
        if min(values) == max(values):
            return values[0]
        return round(sum(v * w for v, w in zip(values, weights)) / total, 2)

    stats = {key: (mean([s[key] for s in stats_list]) if isinstance(value, (int, float)) else value)
             for key, value in stats_list[0].items()}
    if len(nfes) > 1:
        stats.update(batch_size=size, batches=len(nfes))
        if min(nfes) != max(nfes):
            stats.update(nfe_min=min(nfes), nfe_max=max(nfes))
    return mean(nfes), stats


def _sample_batched(model, x0: torch.Tensor, cell: Cell, seeds: list[int] | None,
                    batch_size: int | None) -> tuple[torch.Tensor, float, dict]:
    """Sample ``x0`` in batches of ``batch_size`` (all at once when None) in this process: the samples, the row's
    NFE and its solver stats (:func:`_combine`). Raises the sampler's error."""
    size, batches = batch_plan(x0.shape[0], batch_size, World())
    share = _sample_share(model, x0, cell, seeds, batches, x0.device)
    if share.error is not None:
        raise RuntimeError(share.error)
    nfe, stats = _combine([share.summary()], size)
    return share.x, nfe, stats

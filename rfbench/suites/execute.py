"""Sampling one cell: timed, batched, sharded over processes. Nothing but sampling is inside the timed region.

Before a cell's timed runs the model is evaluated ``WARMUP_EVALS`` times at the batch shape, untimed (CUDA kernels
and the allocator warm up); each batch is then timed with the device synchronised. With several processes each
samples its block of the cell's batches (:func:`rfbench.distributed.batch_plan`), and every timed run lasts until
the slowest process ends. The first timed run samples the suite's x0 and its samples are the cell's; every later run
samples fresh noise of the same shape, the suite's source at seeds derived from the cell's own
(:func:`rfbench.noise.repeat_seeds`), so that no run can reuse the work of an earlier one.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from rfbench.data.base import quantize
from rfbench.device import synchronize
from rfbench.distributed import World, batch_plan
from rfbench.models.labels import seed_classes, seeded
from rfbench.noise import repeat_seeds
from rfbench.samplers import SOLVERS, CountingModel, sample
from rfbench.samplers.gits import SEARCH_ROWS, is_searched, search_grid
from rfbench.samplers.precision import float32_mode
from rfbench.suites.base import Cell
from rfbench.suites.batching import FRACTION, LIMIT, auto_batch_size

WARMUP_EVALS = 2   # untimed model evaluations at a cell's batch shape before its timed runs (kernels, allocator)


def network_fields(config) -> dict:
    """The rows' columns of how the networks were evaluated (a :class:`rfbench.suites.plan.RunConfig`'s --dtype,
    --compile and --channels-last)."""
    return {"net_dtype": config.precision, "compile": config.compile or "off",
            "memory_format": "channels_last" if config.channels_last else "contiguous"}


def timing_protocol(repeats: int, world: World) -> str:
    """The ``timing`` column: how a cell's wall-clock was measured (a resumed cell must have been timed alike).
    ``repeat_noise=fresh``: the runs after the first sampled fresh noise (:func:`sample_share`); a cell stored
    without it was timed by repeating the first run's x0, which a solver could answer from memory, so it is timed
    again. A single run is measured as it always was: its string, and its resumed cells, are unchanged."""
    fresh = ",repeat_noise=fresh" if repeats > 1 else ""
    return f"warmup={WARMUP_EVALS}nfe,repeats={repeats}{fresh},processes={world.size}"


@dataclass
class Share:
    """One process's part of a cell: its samples (first run), per-batch NFE and stats, and its timings."""

    x: torch.Tensor | None = None
    warmup_s: float | None = None      # the untimed warm-up (compilation, when the network is compiled)
    nfes: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    run_times: list = field(default_factory=list)     # seconds per timed run (all of its batches)
    ms_per_nfe: list = field(default_factory=list)    # per batch and run: milliseconds / the batch's NFE
    error: str | None = None

    def summary(self) -> dict:
        return {"nfes": self.nfes, "weights": self.weights, "stats": self.stats, "run_times": self.run_times,
                "ms_per_nfe": self.ms_per_nfe, "warmup_s": self.warmup_s}


@dataclass
class Sampled:
    """A cell's samples in seed order (rank 0) with its NFE, solver stats and timing columns; or its error."""

    x: torch.Tensor | None = None
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    fields: dict = field(default_factory=dict)
    error: str | None = None


def sample_share(model, x0: torch.Tensor, cell: Cell, seeds: list[int] | None, batches: list[tuple[int, int]],
                 device: torch.device, repeats: int = 1, world: World | None = None, precision: str = "fp32",
                 fresh: Callable[[int], tuple[torch.Tensor, list[int] | None]] | None = None,
                 times: list[float] | None = None) -> Share:
    """Sample the rows of ``batches`` ``repeats`` times, timing each run and each batch (synchronised with the
    device) after ``WARMUP_EVALS`` untimed model evaluations at each batch shape, in the run's ``precision`` (a
    compiled network compiles there, once per shape). The first run samples ``x0`` (``seeds``: its rows' seeds, for
    a stochastic solver's per-step noise and a model's classes from the seeds) and its samples are kept; run r >= 1
    samples ``fresh(r)``, an (x0, seeds) pair of the same shape made before the run starts, so that no run can return
    an earlier run's samples from memory. All processes start each run together; an error stops the sampling, not
    the taking part in the collectives, so the other processes never wait for this one. ``times``: the grid a
    searched grid (gits) chose, run in place of the cell's grid name."""
    if repeats > 1 and fresh is None:
        raise ValueError(f"sample_share: {repeats} timed runs need fresh(run), the inputs of the runs after the first")
    world = world or World()
    share = Share()
    xs = []
    try:
        start = time.perf_counter()
        with torch.no_grad(), float32_mode(precision):
            for a, b in {b - a: (a, b) for a, b in batches}.values():     # each batch shape once
                counted = CountingModel(seeded(model, seeds[a:b] if seeds is not None else None), precision=precision)
                t = torch.full((b - a,), 0.5, dtype=x0.dtype, device=x0.device)
                for _ in range(WARMUP_EVALS):
                    counted(x0[a:b], t)
        synchronize(device)
        share.warmup_s = time.perf_counter() - start
    except Exception:   # left for the timed run, whose sampler checks its input and reports the cause
        pass
    stochastic = SOLVERS[cell.solver].is_stochastic(dict(cell.options))
    for run in range(repeats):
        inputs, run_seeds, which = x0, seeds, ""
        if run > 0 and batches and share.error is None:
            which = f"timed run {run + 1} of {repeats} (on fresh noise): "
            try:     # before the processes start the run together, outside its time
                inputs, run_seeds = fresh(run)
            except Exception as exc:
                share.error = f"{which}{type(exc).__name__}: {exc}"
        models = []
        if share.error is None:
            try:     # each batch's classes, for a model that draws them from the seeds: outside the run's time too
                models = [seeded(model, run_seeds[a:b] if run_seeds is not None else None) for a, b in batches]
            except Exception as exc:
                share.error = f"{which}{type(exc).__name__}: {exc}"
        world.barrier()
        if share.error is not None:
            share.run_times.append(float("nan"))
            continue
        try:
            start = time.perf_counter()
            for (a, b), bound in zip(batches, models):
                begin = time.perf_counter()
                result = sample(bound, inputs[a:b], cell.solver, cell.steps, grid=cell.grid if times is None else times,
                                seeds=run_seeds[a:b] if run_seeds is not None and stochastic else None,
                                precision=precision, **dict(cell.options))
                synchronize(device)
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
            share.error = f"{which}{type(exc).__name__}: {exc}"
    if share.error is not None:
        share.x = None
    return share


def combine(shares: list[dict], size: int) -> tuple[float, dict]:
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


def sample_cell(model, x0: torch.Tensor, cell: Cell, seeds: list[int], batch_size: int | None, repeats: int,
                device: torch.device, world: World,
                extract: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
                precision: str = "fp32", compiled: bool = False,
                initial: Callable[[list[int]], torch.Tensor] | None = None) -> Sampled:
    """Sample a cell on every process (each its block of batches); with ``extract`` (image suites) each process
    also extracts its samples' features. Rank 0 gets the samples (and features) of every process in seed order
    and the cell's nfe, batch_size, wall_clock_s, samples_per_s, ms_per_nfe, solver_stats and timing; the others
    get an empty :class:`Sampled`. A failure on any process is the cell's error, on rank 0.

    ``x0`` holds the rows of ``seeds``; ``initial(seeds)`` (the suite problem's, which made x0) makes the fresh x0
    of the timed runs after the first, at :func:`rfbench.noise.repeat_seeds` of each row's seed and the cell's label:
    each row's fresh noise depends on its seed alone, whichever process samples it."""
    if repeats > 1 and initial is None:
        raise ValueError(f"sample_cell: {repeats} timed runs need initial(seeds), the suite's source, to draw the "
                         f"fresh noise of the runs after the first")
    # the rows' seeds go to the sampler for a stochastic solver's noise and a model's classes from the seeds
    takes_seeds = SOLVERS[cell.solver].is_stochastic(dict(cell.options)) or seed_classes(model) > 0
    size, mine = batch_plan(x0.shape[0], batch_size, world)
    # this process's rows only, made before anything is timed (x0 may be a SeedRows that makes them on demand)
    lo, hi = (mine[0][0], mine[-1][1]) if mine else (0, 0)
    rows, batches = x0[lo:hi], [(a - lo, b - lo) for a, b in mine]

    def fresh(run: int) -> tuple[torch.Tensor, list[int] | None]:
        derived = repeat_seeds(seeds[lo:hi], run, cell.label)
        return initial(derived).to(rows.device), derived if takes_seeds else None

    searched, error = {}, None
    if is_searched(cell.grid) and world.is_main:     # once per cell, before its timed runs, from the first seeds
        try:
            found = search_grid(cell.grid, seeded(model, seeds[:SEARCH_ROWS]), x0[:SEARCH_ROWS], cell.steps, precision)
            searched = {"grid_times": ",".join(map(repr, found.times)), "grid_search_nfe": found.nfe,
                        "grid_search_rows": found.rows}
        except Exception as exc:
            error = f"grid {cell.grid}: {type(exc).__name__}: {exc}"
    if is_searched(cell.grid):
        searched, error = world.all_objects((searched, error))[0]
    if error is not None:
        return Sampled(error=error) if world.is_main else Sampled()
    times = [float(t) for t in searched["grid_times"].split(",")] if searched else None
    share = sample_share(model, rows, cell, seeds[lo:hi] if takes_seeds else None, batches, device, repeats, world,
                         precision, fresh, times)
    errors = world.check(share.error, "sample")
    if errors:
        return Sampled(error=errors[0])
    features = logits = None
    if extract is not None:
        if share.x is not None:
            try:
                features, logits = extract(share.x)
            except Exception as exc:
                share.error = f"features: {type(exc).__name__}: {exc}"
        errors = world.check(share.error, "features")
        if errors:
            return Sampled(error=errors[0])
    shares = world.all_objects(share.summary())
    x = world.cat_rows(share.x)
    if extract is not None:
        features, logits = world.cat_rows(features), world.cat_rows(logits)
    if not world.is_main:
        return Sampled()
    nfe, stats = combine(shares, size)
    # each timed run ends when its slowest process does; the cell's time is the median over the repeated runs
    wall = statistics.median(max(s["run_times"][r] for s in shares) for r in range(repeats))
    ms_per_nfe = statistics.median(t for s in shares for t in s["ms_per_nfe"])
    fields = {"batch_size": size, "nfe": nfe, "wall_clock_s": wall, "samples_per_s": x0.shape[0] / wall,
              "ms_per_nfe": ms_per_nfe, "solver_stats": ",".join(f"{k}={v}" for k, v in stats.items()),
              "timing": timing_protocol(repeats, world), **searched}
    warmups = [s["warmup_s"] for s in shares if s["warmup_s"] is not None]
    if compiled and warmups:
        fields["compile_s"] = max(warmups)
    return Sampled(x=x, features=features, logits=logits, fields=fields)


def sample_batched(model, x0: torch.Tensor, cell: Cell, seeds: list[int] | None,
                   batch_size: int | None) -> tuple[torch.Tensor, float, dict]:
    """Sample ``x0`` in batches of ``batch_size`` (all at once when None) in this process: the samples, the row's
    NFE and its solver stats (:func:`combine`). Raises the sampler's error."""
    size, batches = batch_plan(x0.shape[0], batch_size, World())
    share = sample_share(model, x0, cell, seeds, batches, x0.device)
    if share.error is not None:
        raise RuntimeError(share.error)
    nfe, stats = combine([share.summary()], size)
    return share.x, nfe, stats


def probed_batch_size(model_name: str, model, x0: torch.Tensor, batch_size: int | None, device: torch.device,
                      world: World, say: Callable[[str], None], seed: int = 0) -> int | None:
    """``--batch-size auto``: the probed batch size on CUDA (the smallest over the processes, so that all use the
    same batches); on the CPU the suite's own batch size. ``seed``: x0's first row's (every probed row's class, for
    a model with classes from the seeds)."""
    if device.type != "cuda":
        say(f"{model_name}: --batch-size auto probes GPU memory; on the CPU the suite's batch size "
            f"({batch_size or 'all samples at once'}) is kept")
        return batch_size
    try:
        probe = model if not seed_classes(model) else (lambda x, t: seeded(model, [seed] * x.shape[0])(x, t))
        size, error = auto_batch_size(probe, x0[:1], device, limit=min(LIMIT, x0.shape[0])), None
    except Exception as exc:   # every process must reach the collective below, whatever happened here
        size, error = None, f"{type(exc).__name__}: {exc}"
    shared = world.all_objects((size, error))
    errors = [e for _, e in shared if e is not None]
    if errors:
        say(f"{model_name}: the batch size probe failed ({errors[0]}); using the suite's batch size "
            f"({batch_size or 'all samples at once'})")
        return batch_size
    size = min(s for s, _ in shared)
    say(f"{model_name}: batch size {size} (auto: the largest power of two whose evaluation needs at most "
        f"{FRACTION:.0%} of the free GPU memory)")
    return size


def sample_arrays(x: torch.Tensor, seeds, images: bool) -> dict[str, np.ndarray]:
    """A cell's samples as ``rfbench score`` reads them back: ``arr_0`` (images as saved: uint8 NHWC, the layout of
    clean-fid's and ADM's sample files; else the float samples) and ``seeds``, from which the suite's source points
    are drawn again (storing them would cost 614 MB per 50,000 CIFAR samples)."""
    arr = quantize(x).permute(0, 2, 3, 1).numpy() if images else x.float().numpy()
    return {"arr_0": arr, "seeds": np.asarray(list(seeds), dtype=np.int64)}

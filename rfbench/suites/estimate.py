"""What a run would do, without doing it (``--dry-run``): per model the cells to compute (resume honoured), the
model evaluations they need and an estimate of the time, from the earlier cells in the run's folder or from a short
measured probe of the model's network.

Nothing is trained: what each recipe would train is the plan's (:attr:`~rfbench.suites.plan.Plan.training`), and
the probe evaluates an untrained network of the same architecture (built through a :class:`PlanningCache`), which
costs the same to evaluate.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from rfbench.device import device_name
from rfbench.distributed import World, batch_plan
from rfbench.models.cache import PlanningCache, Training
from rfbench.models.labels import seeded
from rfbench.models.sources import LoadContext, ModelIdentity
from rfbench.progress import ADAPTIVE_NFE_GUESS, TRAIN_EVALS_PER_SAMPLE, duration
from rfbench.protocols import is_diffusion_model
from rfbench.results.resume import finished_cells, with_samples
from rfbench.results.schema import record_steps
from rfbench.results.store import ResultStore
from rfbench.suites.base import Cell, cell_nfe, ode_cell, search_work
from rfbench.suites.evaluate import INDEPENDENT, Evaluation
from rfbench.suites.plan import Plan, metric_columns
from rfbench.suites.runner import wanted_cells
from rfbench.threads import threads_for, training_threads, using_threads

PROBE_EVALS = 5          # timed evaluations of a model's network at the run's batch shape (after one untimed)
TRAIN_STEP_EVALS = TRAIN_EVALS_PER_SAMPLE     # a training step of batch B: about 3 B evaluations (forward + backward)


@dataclass
class CellEstimate:
    cell: Cell
    kept: bool
    nfe: float | None            # per sample: the solver's count, an earlier run's, or None (adaptive, unknown)
    search: float = 0.0          # sample-evaluations of its grid's search (gits), before it samples


@dataclass
class ModelEstimate:
    name: str
    description: str
    cells: list[CellEstimate] = field(default_factory=list)
    training: list[Training] = field(default_factory=list)
    seconds_per_batch_eval: float | None = None   # one model evaluation on a batch of the run's batch size
    basis: str = ""                                # where that time came from
    error: str | None = None                       # why it could not be loaded or probed
    reference_evals: float = 0.0                   # sample-evaluations of its reference trajectory and solution
    seconds_per_train_step: dict = field(default_factory=dict)   # training batch size -> forward + backward

    @property
    def to_compute(self) -> list[CellEstimate]:
        return [c for c in self.cells if not c.kept]


@dataclass
class RunEstimate:
    plan: Plan
    out: Path
    device: str
    batch_size: int
    batches: int
    repeats: int
    independent: bool | None          # None: the suite has no independent row; True: kept; False: to compute
    models: list[ModelEstimate]

    def evaluations(self, model: ModelEstimate) -> float:
        """Sample-evaluations (NFE x samples x timed runs, and their grids' searches) of the model's cells to
        compute."""
        return sum(_nfe(c) for c in model.to_compute) * self.plan.num_samples * self.repeats \
            + sum(c.search for c in model.to_compute)

    def sampling_seconds(self, model: ModelEstimate) -> float | None:
        if model.seconds_per_batch_eval is None:
            return None
        return (sum(_nfe(c) for c in model.to_compute) * self.batches * self.repeats
                + sum(c.search for c in model.to_compute) / self.batch_size) * model.seconds_per_batch_eval

    def training_seconds(self, model: ModelEstimate) -> float | None:
        if model.seconds_per_batch_eval is None:
            return None
        total = 0.0
        for job in model.training:
            if job.steps and job.batch_size:
                step = model.seconds_per_train_step.get(job.batch_size)
                if step is None:     # no probe of a training step: about three evaluations of its batch
                    step = TRAIN_STEP_EVALS * model.seconds_per_batch_eval * job.batch_size / self.batch_size
                total += job.steps * step
        return total

    def other_seconds(self, model: ModelEstimate) -> float | None:
        """Reflow pairs and the reference trajectory and solution: adaptive solves, at rk45's usual NFE."""
        if model.seconds_per_batch_eval is None:
            return None
        pairs = sum(job.pairs * ADAPTIVE_NFE_GUESS for job in model.training if job.pairs)
        return (pairs + model.reference_evals) * model.seconds_per_batch_eval / self.batch_size


def _nfe(cell: CellEstimate) -> float:
    """A cell's NFE, or for an adaptive one whose NFE only the run tells, rk45's usual count."""
    return cell.nfe if cell.nfe is not None else ADAPTIVE_NFE_GUESS


def _known_nfe(cell: Cell, model, stored: dict[tuple, float]) -> float | None:
    """The cell's NFE per sample: known before it runs, else what an earlier run of it in the folder counted."""
    nfe = cell_nfe(cell, model)
    return float(nfe) if nfe is not None else stored.get((cell.model, cell.solver, cell.steps,
                                                          cell.fields()["options"]))


def _probe(net, plan: Plan, batch: int, device: torch.device, train: bool = False) -> float:
    """Seconds of one evaluation of ``net`` on a batch of ``batch`` of the suite's samples (the fastest of a few);
    ``train``: of a forward and backward pass (a training step but for the optimizer's update)."""
    seeds = list(plan.seeds)[:batch]
    x = plan.problem.initial(seeds).to(device)
    if len(x) < batch:
        x = x.repeat(math.ceil(batch / len(x)), *([1] * (x.dim() - 1)))[:batch]
        seeds = (seeds * math.ceil(batch / len(seeds)))[:batch]
    net = seeded(net, seeds)      # each row with its seed's class, where the model draws them from the seeds

    def once():
        with torch.set_grad_enabled(train):
            if is_diffusion_model(net):
                out = net.eps(x, torch.full((batch,), net.num_timesteps // 2, dtype=torch.long, device=device))
            else:
                out = net(x, torch.full((batch,), 0.5, device=device))
            if train and out.requires_grad:
                out.float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    once()
    times = []
    for _ in range(PROBE_EVALS):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return min(times)     # the least disturbed by other work on the machine


def _identity(model, ctx: LoadContext) -> ModelIdentity:
    """The model's identity, as the run has it (a factory loaded for it); a file that cannot be read is not
    resumable (the run refuses it: the dry run lists the problem after its plan)."""
    try:
        return model.source.identify(ctx)
    except Exception:
        return ModelIdentity("unreadable", "unreadable", resumable=False)


def estimate(plan: Plan, out: str | Path, device: torch.device, resume: bool = True,
             probe: bool = True) -> RunEstimate:
    """The estimate of a run of ``plan`` into ``out`` on ``device`` (see the module docstring), with the plan's
    cache."""
    out = Path(out)
    world = World()
    batch, slices = batch_plan(plan.num_samples, plan.batch_size, world)
    batches = len(slices)
    seeds = list(plan.seeds)
    store = ResultStore(out, metric_columns(plan))
    records = {}
    if out.is_dir():
        try:
            records = {k: r for k, r in store.records().items() if r.get("status") == "ok"}
        except Exception:
            records = {}
    # image suites: the extractor and reference columns are known only once the reference features are computed;
    # the estimate takes those of the folder's cells of this suite when they agree (the run checks them)
    evaluated = {}
    mine = [r for r in records.values() if r.get("suite") == plan.name and r.get("suite_version") == plan.version]
    for column in ("extractor", "reference"):
        values = {r.get(column) for r in mine}
        if len(values) == 1:
            evaluated[column] = values.pop()
    named = str(evaluated.get("extractor") or "")
    if plan.extractor is not None and not any(named.startswith(f"{e} (") for e in
                                              (plan.extractor, plan.fallback_extractor) if e):
        evaluated = {}
    base = {"suite": plan.name, "suite_version": plan.version, "n_samples": plan.num_samples, "seed": seeds[0],
            **evaluated}
    dev = device_name(device)
    stored_nfe = {}
    for rec in mine:
        if rec.get("nfe") is not None and rec.get("n_samples") == plan.num_samples:
            stored_nfe[(rec.get("model"), rec.get("solver"), record_steps(rec), rec.get("options") or "")] = \
                float(rec["nfe"])
    cache = PlanningCache(plan.cache_dir)
    identities = {m.name: _identity(m, LoadContext(plan.suite, cache, device, lambda msg: None)) for m in plan.models}
    wanted = wanted_cells(plan, {**base, "device": dev}, identities, world)    # as the run decides
    kept = finished_cells(store, wanted, metric_columns(plan), lambda msg: None) if resume and records else {}
    if plan.save_samples:     # as the run: a kept cell without its samples is sampled again
        kept = with_samples(store, kept, exempt=(INDEPENDENT,))
    models, counted, probed = [], set(), {}
    training = dict(plan.training)
    evaluation = Evaluation(plan, None, None)
    shape_only = torch.empty((plan.num_samples, *plan.problem.shape), device="meta")   # no memory
    for model in plan.models:
        est = ModelEstimate(model.name, model.source.describe())
        net = None
        missing = model.source.missing(model.name)
        if all(cell.label in kept for cell in plan.grid(model.name)):
            pass                # as the run: a model all of whose cells are kept is not even loaded
        elif missing is not None:
            est.error = missing
        else:
            est.training = [job for job in training.get(model.name) or () if job.name not in counted]   # once
            counted.update(job.name for job in est.training)
            try:
                net = model.source.load(LoadContext(plan.suite, cache, device, lambda msg: None))
            except Exception as exc:
                est.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        for cell in plan.grid(model.name):
            est.cells.append(CellEstimate(cell, cell.label in kept, _known_nfe(cell, net, stored_nfe),
                                          search_work(cell, plan.num_samples, net)))
        if est.to_compute:      # as the run: the reference trajectory, and the reference solution for ODE cells
            est.reference_evals = evaluation.model_scope_work(model.kind, shape_only)
            if any(ode_cell(c.cell) for c in est.to_compute):
                est.reference_evals += evaluation.exact_rows(model.kind, shape_only) * ADAPTIVE_NFE_GUESS
        earlier = [float(r["ms_per_nfe"]) / 1000 for r in mine if r.get("model") == model.name
                   and r.get("model_id") == identities[model.name].id and r.get("device") == dev
                   and r.get("batch_size") == batch and r.get("ms_per_nfe") is not None
                   and not math.isnan(float(r["ms_per_nfe"]))]
        if earlier:
            est.seconds_per_batch_eval = statistics.median(earlier)
            est.basis = f"the median ms per evaluation of {len(earlier)} earlier cell(s) in {out}"
        elif net is not None and probe and (est.to_compute or est.training):
            arch = (type(getattr(net, "net", net)).__name__, sum(p.numel() for p in net.parameters())
                    if isinstance(net, torch.nn.Module) else id(net))
            try:
                if arch not in probed:       # the same network architecture costs the same: probed once
                    with using_threads(threads_for(net, plan.threads, device)):    # as the run samples it
                        probed[arch] = _probe(net, plan, batch, device)
                est.seconds_per_batch_eval = probed[arch]
                est.basis = f"a probe: the fastest of {PROBE_EVALS} evaluations of a batch of {batch} on {dev}"
                for size in sorted({job.batch_size for job in est.training if job.steps and job.batch_size}):
                    if (arch, size) not in probed:
                        with using_threads(training_threads(plan.threads, device)):    # as the run trains it
                            probed[(arch, size)] = _probe(net, plan, size, device, train=True)
                    est.seconds_per_train_step[size] = probed[(arch, size)]
                if est.seconds_per_train_step:
                    est.basis += " and of forward + backward passes at the training batch"
            except Exception as exc:
                est.error = f"the probe failed: {type(exc).__name__}: {exc}"
        models.append(est)
    independent = None if not plan.independent_row else INDEPENDENT in kept
    return RunEstimate(plan, out, dev, batch, batches, plan.repeats, independent, models)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return "under 1s" if seconds < 1 else duration(seconds)


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def describe(est: RunEstimate, origin: Callable[[str], str] = lambda model: "",
             solver_origin: Callable[[str], str] = lambda solver: "") -> str:
    """The dry run's text: the plan, then per model its cells (kept or to compute, NFE) and the estimate."""
    plan = est.plan
    cells = sum(len(m.cells) for m in est.models)
    todo = sum(len(m.to_compute) for m in est.models)
    independent = " + the independent row" if est.independent is not None else ""
    last = plan.first_seed + plan.num_samples - 1
    lines = [f"{plan.name} v{plan.version}: {cells} cells{independent}, {plan.num_samples} samples (seeds "
             f"{plan.first_seed}-{last}), batch {est.batch_size}, {est.repeats} timed run(s) per cell, device "
             f"{est.device}, output {est.out}"]
    kept = cells - todo
    if kept:
        lines.append(f"resume: {kept} of {cells} cells are finished in {est.out / 'cells'} and kept (--force "
                     f"recomputes them)")
    if est.independent is not None:
        lines.append(f"  independent row (the independent coupling, real data against real data): "
                     f"{'kept' if est.independent else 'to compute'}")
    total_evals, total_s, unknown = 0.0, 0.0, []
    for model in est.models:
        state = ""
        if model.training:
            state = "; to train: " + ", ".join(
                f"{job.name} ({job.pairs} rk45 pairs)" if job.pairs else
                f"{job.name} ({job.steps} steps of {job.batch_size})" if job.steps else job.name
                for job in model.training)
        lines.append(f"  {model.name}: {model.description}{origin(model.name)}{state}")
        for c in model.cells:
            nfe = f"NFE ~{ADAPTIVE_NFE_GUESS}" if c.nfe is None else f"NFE {c.nfe:g}"
            search = f" (+ its grid's search: {_count(c.search)} sample-evaluations)" if c.search and not c.kept else ""
            lines.append(f"    {c.cell.label:34s} {nfe:10s} {'kept' if c.kept else 'to compute'}{search}"
                         f"{solver_origin(c.cell.solver)}")
        if model.error:
            lines.append(f"    cannot estimate: {model.error}")
        if not model.to_compute and not model.training:
            lines.append("    nothing to compute")
            continue
        evals = est.evaluations(model)
        sampling, training = est.sampling_seconds(model), est.training_seconds(model)
        adaptive = [c.cell.label for c in model.to_compute if c.nfe is None]
        total_evals += evals
        parts = [f"{len(model.to_compute)} cell(s) to compute, {_count(evals)} sample-evaluations of the model"]
        if sampling is not None:
            parts.append(f"sampling about {_duration(sampling)}")
            total_s += sampling
        if training:
            parts.append(f"training about {_duration(training)}")
            total_s += training
        other = est.other_seconds(model)
        if other:
            parts.append(f"reference solutions{' and reflow pairs' if any(j.pairs for j in model.training) else ''}"
                         f" about {_duration(other)}")
            total_s += other
        notes = []
        if model.basis:
            notes.append(f"times from {model.basis}" + (f"; a training step taken as {TRAIN_STEP_EVALS} evaluations"
                                                        if training and not model.seconds_per_train_step else "")
                         + (f"; a reference or pair solve as ~{ADAPTIVE_NFE_GUESS} NFE" if other else ""))
        if adaptive:
            notes.append(f"{len(adaptive)} adaptive cell(s) counted at ~{ADAPTIVE_NFE_GUESS} NFE: only the run tells")
        if sampling is None:
            unknown.append(model.name)
        lines.append("    -> " + ", ".join(parts))
        lines += [f"       ({note})" for note in notes]
    left_out = "the metrics' own computation (w2, features, FID, ...)"
    time = f"about {_duration(total_s)} of model evaluations on {est.device}"
    if unknown:
        left_out += f"; the time of {', '.join(unknown)}, which could not be loaded or probed"
        if total_s == 0:
            time = "time unknown"
    lines.append(f"total: {todo} of {cells} cells to compute, {_count(total_evals)} sample-evaluations, {time} "
                 f"(not included: {left_out})")
    return "\n".join(lines)

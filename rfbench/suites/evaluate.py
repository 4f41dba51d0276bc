"""Evaluating a cell: the suite's metrics on its samples, against the reference; the independent row; and the
model-scope metrics (straightness) on a fine reference trajectory.

Each metric declares what it needs (:attr:`rfbench.metrics.Metric.needs`); this module prepares exactly that:
held-out target samples for w2, the feature extractor and the reference set's features, statistics and k-NN radii
for the image metrics, a trajectory for straightness. The same code scores a run's own cells and samples made
elsewhere (``rfbench score``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rfbench.data.base import quantize
from rfbench.files import sha1_files
from rfbench.metrics import METRICS, PR_K, GaussianStats, MetricInput, knn_radii
from rfbench.metrics.features import EXTRACTORS, FeatureExtractor, NoInceptionWeightsError
from rfbench.metrics.reference import ReferenceKey, load_reference_file, reference_features, reference_stats
from rfbench.models.labels import seeded
from rfbench.samplers import SOLVERS, sample

PLOT_PATHS = 300  # trajectories drawn per model
INDEPENDENT = "independent"
INDEPENDENT_FIELDS = {"model": INDEPENDENT, "solver": "none", "steps": None, "options": ""}


def needs(metrics, need: str) -> list[str]:
    """The metrics (names) that need ``need`` (see :attr:`rfbench.metrics.Metric.needs`)."""
    return [name for name in metrics if need in METRICS[name].needs]


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

    def inputs(self, z0: torch.Tensor | None, z1: torch.Tensor, features: torch.Tensor | None = None,
               logits: torch.Tensor | None = None, bootstrap: int = 0) -> MetricInput:
        if features is None:
            features, logits = self.extract(z1)
        return MetricInput(z0=z0, z1=z1, features=features, logits=logits,
                           reference_features=self.reference_features, reference_stats=self.reference_stats,
                           reference_radii=self.reference_radii, bootstrap=bootstrap)


def image_eval(plan, cache_root: Path, device: torch.device, options: dict | None, say: Callable[[str], None],
               images: torch.Tensor | None = None, reference: bool = True, radii: bool = True) -> ImageEval | None:
    """The extractor and the reference set's features; ``images``: the reference images when already loaded.
    ``reference=False`` (ranks other than 0, which only extract their samples' features): the extractor only.
    ``radii=False``: the reference's k-NN radii are left to :meth:`Evaluation.share_reference` (several processes)."""
    if plan.extractor is None:
        return None
    problem = plan.problem
    options = dict(options or {})
    try:
        extractor = EXTRACTORS[plan.extractor](cache_root, device, log=say, problem=problem, **options)
    except NoInceptionWeightsError as exc:
        if plan.fallback_extractor is None or options.get("weights") is not None:
            raise
        say(f"{exc}\nscoring with the {plan.fallback_extractor} extractor instead (recorded in the extractor column)")
        extractor = EXTRACTORS[plan.fallback_extractor](cache_root, device, log=say, problem=problem)
    if not reference:
        return ImageEval(extractor, None, None, {})
    if plan.reference_file is not None:
        features_np, stats, held = load_reference_file(plan.reference_file, extractor.dim)
        features = None if features_np is None else torch.from_numpy(features_np)
        digest = sha1_files(plan.reference_file)[:12]     # the content, not the name
        described = f"{Path(plan.reference_file).name} (sha1 {digest}, given: {held})"
    else:
        images = problem.reference() if images is None else images
        key = ReferenceKey(dataset=problem.dataset, split=problem.reference_split, extractor=extractor.identity,
                           resize_mode=extractor.resize_mode, resolution=problem.shape[-1],
                           fingerprint=problem.fingerprint(problem.reference_split, images)[:12])
        features_np, _ = reference_features(key, cache_root, lambda: extractor.features(quantize(images)).numpy())
        features = torch.from_numpy(features_np)
        stats, path = reference_stats(key, cache_root, lambda: [features.numpy()])
        if stats.n != len(images):
            raise ValueError(f"cached reference statistics {path} were computed from {stats.n} images, but "
                             f"{problem.dataset}/{problem.reference_split} now has {len(images)}; remove the file")
        described = f"{path.name} ({len(images)} images)"
    fields = {"extractor": f"{extractor.name} ({extractor.checkpoint}, {extractor.resize_mode})",
              "reference": described}
    radii = (knn_radii(features, PR_K, device=device)
             if radii and features is not None and needs(plan.metrics, "reference_radii") else None)
    return ImageEval(extractor, features, stats, fields, radii)


def empty_metrics(metrics) -> dict:
    """Every column of a failed cell: costs and metrics empty, never a made-up number."""
    out: dict = {"nfe": None, "wall_clock_s": None, "samples_per_s": None, "ms_per_nfe": None}
    for name in metrics:
        out.update(dict.fromkeys(METRICS[name].columns))
    return out


class Evaluation:
    """The suite's metrics for one run: built once (extractor, reference), then applied to each cell.

    ``metrics``: the metrics that can be computed (a reference given as statistics only leaves out those that need
    the reference features; their columns stay, empty, and the notes say why)."""

    def __init__(self, plan, reference: torch.Tensor | None, images: ImageEval | None):
        self.plan = plan
        self.reference = reference
        self.images = images
        self.metrics = tuple(plan.metrics)
        self.sharing: tuple[str, ...] = ()
        self.notes: list[str] = []
        self.empty: dict = {}
        if images is not None and images.extractor.num_classes is None and needs(self.metrics, "logits"):
            self.notes.append(f"IS empty: {images.extractor.logits_note}")
        if images is not None and reference is not None and images.reference_features is None:
            dropped = needs(self.metrics, "reference_features")
            self.metrics = tuple(m for m in self.metrics if m not in dropped)
            self.notes.append(f"{', '.join(dropped)} empty: the reference file holds statistics only, not features")
            for name in dropped:   # the columns stay, empty
                self.empty.update(dict.fromkeys(METRICS[name].columns))

    @property
    def fields(self) -> dict:
        """The rows' extractor and reference columns (image suites)."""
        return dict(self.images.fields) if self.images is not None else {}

    def inputs(self, z0: torch.Tensor | None, z1: torch.Tensor, features=None, logits=None,
               exact: torch.Tensor | None = None) -> MetricInput:
        if self.images is None:
            inputs = MetricInput(z0=z0, z1=z1, reference=self.reference, bootstrap=self.plan.bootstrap)
        else:
            inputs = self.images.inputs(z0, z1, features, logits, bootstrap=self.plan.bootstrap)
        return dataclasses.replace(inputs, exact=exact) if exact is not None else inputs

    def cell_metrics(self, inputs: MetricInput, shared: dict | None = None, skip: tuple[str, ...] = ()) -> dict:
        """The cell-scope metrics on one coupling; model-scope columns (straightness) stay empty here and are filled
        per model by :meth:`model_scope` (the independent coupling has no flow, so they stay empty). Coupling
        metrics of samples without their source points (z0 None: samples made elsewhere) stay empty. ``shared``:
        the values of the metrics all processes computed together (:meth:`shared_metrics`); ``skip``: metrics left
        empty (:attr:`~rfbench.suites.Suite.skip_metrics`). The metrics run one after another, in the suite's order;
        the first that fails raises."""
        values: dict = dict(self.empty)
        for name in self.metrics:
            metric = METRICS[name]
            if metric.scope != "cell" or name in skip or (inputs.z0 is None and "z0" in metric.needs):
                values.update(dict.fromkeys(metric.columns))
            elif shared is not None and name in self.sharing:
                values.update({col: shared[col] for col in metric.columns})
            else:
                values.update(metric(inputs))
        return values

    @property
    def shared(self) -> tuple[str, ...]:
        """The metrics of this run that several processes compute together (:attr:`Metric.shared`): image metrics
        on the reference's features (precision/recall's k-NN work)."""
        if self.images is None or self.images.extractor is None:
            return ()
        return tuple(name for name in self.metrics if METRICS[name].shared and METRICS[name].scope == "cell")

    def share_reference(self, world, device: torch.device, names: tuple[str, ...]) -> None:
        """Before the cells of a torchrun: the reference features on every process (rank 0 loaded them) and their
        k-NN radii computed by all together. ``names``: rank 0's :attr:`shared`, which every process adopts."""
        self.sharing = names
        features = world.broadcast_rows(self.images.reference_features)
        self.images.reference_features = features
        if features is not None and needs(names, "reference_radii"):
            self.images.reference_radii = knn_radii(features, PR_K, device=device, world=world)

    def shared_metrics(self, features: torch.Tensor | None, world) -> tuple[dict, str | None]:
        """The shared metrics of one cell, computed by every process on rank 0's ``features`` (the others pass
        None), each taking its block of rows: (their values, None), or ({}, why they failed on some process)."""
        features = world.broadcast_rows(features)
        error = None
        try:
            inputs = dataclasses.replace(self.images.inputs(None, features, features, None, self.plan.bootstrap),
                                         world=world)
            values = {col: value for name in self.sharing for col, value in METRICS[name](inputs).items()}
        except Exception as exc:
            values, error = {}, f"{type(exc).__name__}: {exc}"
        errors = world.check(error, "shared metrics")
        return (values, None) if not errors else ({}, errors[0])

    def independent_record(self, x0: torch.Tensor, seeds: list[int], notes: str | None) -> dict:
        """The independent coupling (X0, X1 drawn separately): the reference row of the coupling metrics, and for
        image metrics the floor that a finite sample of real images gives."""
        x1 = self.plan.problem.independent_target(seeds)
        n = x1.shape[0]            # image suites: at most the held-out split's size (distinct images only)
        values = self.cell_metrics(self.inputs(x0[:n], x1))
        fewer = {} if n == len(seeds) else {
            "n_samples": n, "seeds": f"{seeds[0]}-{seeds[n - 1]}",
            "notes": "; ".join(filter(None, [notes, f"{n} samples: every image of the held-out split once"]))}
        return {**INDEPENDENT_FIELDS, "nfe": 0, "wall_clock_s": None, "samples_per_s": None, **values,
                "bootstrap": self.plan.bootstrap, "status": "ok", "error": None, **fewer}

    def exact_rows(self, kind: str, x0: torch.Tensor) -> int:
        """How many rows of x0 :meth:`exact` solves for a model of ``kind`` (0: none)."""
        if kind == "one-step" or not needs(self.metrics, "exact"):
            return 0
        rows = self.plan.suite.solver_error_samples
        return min(rows, x0.shape[0]) if rows else x0.shape[0]

    def exact(self, kind: str, model, x0: torch.Tensor, batch: int | None, say: Callable[[str], None],
              seeds: list[int]) -> tuple[torch.Tensor | None, str | None, int | None]:
        """The model's own ODE solution from the first ``solver_error_samples`` rows of x0 (rk45 at rtol = atol =
        the suite's ``solver_error_tolerance``, ``batch`` rows per call), when a metric needs it (solver_error), why
        it is missing when it failed, and the model evaluations it took (NFE x rows of each call; None when it
        failed): (None, None, 0) for one-step models and runs without the metric. ``seeds``: x0's rows' (the classes
        of a model that draws them from the seeds)."""
        rows, tol = self.exact_rows(kind, x0), self.plan.suite.solver_error_tolerance
        if not rows:
            return None, None, 0
        x0, seeds = x0[:rows], seeds[:rows]
        size = batch or x0.shape[0]
        try:
            results = [sample(seeded(model, seeds[i:i + size]), x0[i:i + size], "rk45", rtol=tol, atol=tol)
                       for i in range(0, rows, size)]
        except Exception as exc:   # the cells keep their other metrics; a rerun computes solver_error again
            why = f"solver_error: the model's reference solution (rk45, tolerance {tol:g}) failed: " \
                  f"{type(exc).__name__}: {exc}"
            say(why)
            return None, why, None
        return torch.cat([r.x.cpu() for r in results]), None, sum(r.nfe * r.x.shape[0] for r in results)

    def model_scope_work(self, kind: str, x0: torch.Tensor) -> int:
        """The model evaluations (NFE x rows) that :meth:`model_scope` makes for a model of ``kind``."""
        plottable = x0.ndim == 2 and x0.shape[1] == 2
        if kind == "one-step":
            return min(PLOT_PATHS, x0.shape[0]) if plottable else 0
        if not plottable and not any(METRICS[name].scope == "model" for name in self.metrics):
            return 0
        rows = min(self.plan.straightness_samples or x0.shape[0], x0.shape[0])
        return SOLVERS["rk4"].nfe(self.plan.straightness_steps) * rows

    def model_scope(self, kind: str, model, x0: torch.Tensor, say: Callable[[str], None],
                    seeds: list[int]) -> tuple[dict, tuple[str, np.ndarray] | None]:
        """Model-scope metrics (straightness) on a fine rk4 reference trajectory from the suite's x0 (whose rows'
        ``seeds`` give the classes of a model that draws them from the seeds), and the trajectories to plot. A
        one-step model is not a flow: its metrics stay empty and its plot is its one step."""
        plan = self.plan
        metrics = [METRICS[name] for name in self.metrics if METRICS[name].scope == "model"]
        values: dict = {col: None for metric in metrics for col in metric.columns}
        plottable = x0.ndim == 2 and x0.shape[1] == 2      # trajectories are drawn for 2D problems
        if kind == "one-step":
            if not plottable:
                return values, None
            try:
                traj = sample(seeded(model, seeds[:PLOT_PATHS]), x0[:PLOT_PATHS], "euler", 1,
                              trajectory=True).trajectory
            except Exception:  # the cell itself will record the failure
                return values, None
            return values, ("euler, 1 step", traj.states.numpy())
        steps = plan.straightness_steps
        if not metrics and not plottable:
            return values, None
        x0 = x0[:plan.straightness_samples] if plan.straightness_samples else x0
        try:
            result = sample(seeded(model, seeds[:x0.shape[0]]), x0, "rk4", steps, trajectory=True)
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
                f", first {x0.shape[0]} seeds" if plan.straightness_samples else "")
        return values, ((f"rk4, {steps} steps", traj.states[:, :PLOT_PATHS].numpy()) if plottable else None)

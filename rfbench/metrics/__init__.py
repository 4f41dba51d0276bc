"""Metrics, registered by name, each saying whether higher is better and which result columns it fills.

A metric sees plain tensors (the coupling, the trajectory if any, the reference samples), never a sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from rfbench.metrics.coupling import crossing_prob, segments_intersect, straightness, transport_cost
from rfbench.metrics.distances import energy_distance, w2, w2_with_se
from rfbench.metrics.image import (GaussianStats, StatsAccumulator, bootstrap_se, fid, frechet_distance,
                                   frechet_distance_stats, inception_score, kid, kid_with_se, knn_radii,
                                   precision_recall, recall_se)
from rfbench.registry import Registry

__all__ = ["METRICS", "Metric", "MetricInput", "crossing_prob", "segments_intersect", "straightness",
           "transport_cost", "w2", "energy_distance", "GaussianStats", "StatsAccumulator", "fid", "frechet_distance",
           "frechet_distance_stats", "kid", "knn_radii", "precision_recall", "inception_score", "w2_with_se",
           "kid_with_se", "recall_se", "interval_methods", "column_directions", "quality_directions",
           "register_metric", "NEEDS", "PR_K"]


PR_K = 3   # neighbours of the precision/recall manifolds (Kynkaanniemi et al. 2019)


@dataclass(frozen=True)
class MetricInput:
    """What a metric may look at for one cell. z0, z1: (N, ...) the coupling (source points, samples).
    reference: (M, ...) held-out target samples. times/states/velocities: the trajectory, when recorded.
    Image suites add features (N, D) and logits (N, K) of the samples (logits None when the extractor has no
    classifier head), and reference_features (M, D) with their statistics."""

    z0: torch.Tensor | None          # None: samples scored from a file without their source points
    z1: torch.Tensor
    reference: torch.Tensor | None = None
    times: torch.Tensor | None = None
    states: torch.Tensor | None = None
    velocities: torch.Tensor | None = None
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    reference_features: torch.Tensor | None = None
    reference_stats: GaussianStats | None = None
    reference_radii: torch.Tensor | None = None   # knn_radii(reference_features, PR_K), computed once per run
    exact: torch.Tensor | None = None   # the model's own tight-tolerance ODE solution from the first rows of z0
    # replicates of the resampling standard errors: bootstrap for fid and is, half-sampling for recall (0: those
    # and kid's jackknife are not computed; the closed-form ones, such as w2's and precision's, always are)
    bootstrap: int = 0
    world: Any = None   # the processes of a torchrun that share a metric's work (Metric.shared); None: this one


NEEDS = ("z0", "reference", "features", "logits", "reference_features", "reference_radii", "trajectory", "exact")


@dataclass(frozen=True)
class Metric:
    """A registered metric. scope: ``"cell"`` (computed on each cell's samples) or ``"model"`` (a property of the
    model's flow, computed once per model on a fine reference trajectory and reported on each of its rows).
    ``needs``: what of :class:`MetricInput` it reads beyond the samples z1: their source points (``z0``; samples
    scored from a file may not have them, and the metric is then left empty), held-out target samples
    (``reference``), the samples' ``features`` or ``logits``, the reference set's features (``reference_features``:
    a reference given as statistics only leaves the metric empty) and their k-NN radii (``reference_radii``),
    the model's ``trajectory``, or its own high-accuracy solution from the same x0 (``exact``). The runner
    prepares exactly what the suite's metrics need."""

    name: str
    columns: tuple[str, ...]
    higher_is_better: bool
    fn: Callable[[MetricInput], dict]
    description: str = ""
    scope: str = "cell"
    intervals: tuple[tuple[str, str], ...] = ()    # (standard-error column, how it is estimated)
    needs: tuple[str, ...] = ()
    # whether a better value means better samples (FID, w2, solver error); False for what describes the coupling or
    # the flow (crossing probability, transport cost, straightness): a table marks no "best" value of those
    quality: bool = True
    # computed by every process of a torchrun together (its fn splits the work over inputs.world; every process
    # passes the same features and gets the same values), not by rank 0 alone
    shared: bool = False
    # bytes the metric needs for n samples of d numbers each where that outgrows a few copies of the samples (w2's
    # n x n cost matrix), as memory(n, d); the run refuses before any work a sample count that cannot fit. None:
    # no more than a few copies of the samples
    memory: Callable[[int, int], float] | None = None

    def __post_init__(self):
        if self.scope not in ("cell", "model"):
            raise ValueError(f"metric {self.name}: scope must be 'cell' or 'model', got {self.scope!r}")
        unknown_needs = [n for n in self.needs if n not in NEEDS]
        if unknown_needs:
            raise ValueError(f"metric {self.name}: needs {unknown_needs}; a metric may need {', '.join(NEEDS)}")
        if not self.columns or not all(isinstance(c, str) and c for c in self.columns):
            raise ValueError(f"metric {self.name}: columns must be a non-empty tuple of names, got {self.columns!r}")
        unknown = [col for col, _ in self.intervals if col not in self.columns]
        if unknown:
            raise ValueError(f"metric {self.name}: intervals name columns it does not fill: {unknown}")

    def __call__(self, inputs: MetricInput) -> dict:
        out = self.fn(inputs)
        assert set(out) == set(self.columns), (self.name, sorted(out))
        return out


METRICS: Registry[Metric] = Registry("metric")


def _crossing(inp: MetricInput) -> dict:
    if inp.z0.ndim != 2 or inp.z0.shape[1] != 2:  # only defined in 2D: empty, never a made-up number
        return {"crossing_prob": None, "crossing_prob_se": None}
    p, se = crossing_prob(inp.z0, inp.z1)
    return {"crossing_prob": p, "crossing_prob_se": se}


def _straightness(inp: MetricInput) -> dict:
    if inp.velocities is None or inp.states is None or inp.times is None:
        return {"straightness": None, "straightness_se": None}
    value, se = straightness(inp.times, inp.states, inp.velocities, with_se=True)
    return {"straightness": value, "straightness_se": se}


def _w2(inp: MetricInput) -> dict:
    if inp.reference is None:
        raise ValueError("w2 needs reference samples of the target distribution")
    value, se = w2_with_se(inp.z1, inp.reference[:len(inp.z1)])   # a toy reference holds more points than samples
    return {"w2": value, "w2_se": se}


def _energy(inp: MetricInput) -> dict:
    if inp.reference is None:
        raise ValueError("energy needs reference samples of the target distribution")
    value, se = energy_distance(inp.z1, inp.reference)
    return {"energy": value, "energy_se": se}


def _solver_error(inp: MetricInput) -> dict:
    """RMS distance between the samples and the model's own high-accuracy solution from the same x0 (its first rows),
    with the delta-method standard error of the RMS from the per-seed squared distances."""
    if inp.exact is None:      # a stochastic sampler, a discrete one, a one-step model: no ODE solution to meet
        return {"solver_error": None, "solver_error_se": None}
    n = inp.exact.shape[0]
    d2 = (inp.z1[:n].double() - inp.exact.double().to(inp.z1.device)).reshape(n, -1).pow(2).sum(1).cpu()
    mse = float(d2.mean())
    rms = math.sqrt(mse)
    se = float(d2.std()) / math.sqrt(n) / (2 * rms) if rms > 0 and n > 1 else None
    return {"solver_error": rms, "solver_error_se": se}


def _need_features(inp: MetricInput, name: str) -> None:
    if inp.features is None or inp.reference_features is None:
        raise ValueError(f"{name} needs image features of the samples and of the reference (a suite with an extractor)")


def _fid(inp: MetricInput) -> dict:
    if inp.reference_stats is None:   # the reference may be given as statistics only (no features)
        _need_features(inp, "fid")
    elif inp.features is None:
        raise ValueError("fid needs image features of the samples (a suite with an extractor)")
    ref = inp.reference_stats or GaussianStats.from_features(inp.reference_features)
    value = frechet_distance_stats(GaussianStats.from_features(inp.features), ref)
    se = None
    if inp.bootstrap:
        features = inp.features.numpy() if isinstance(inp.features, torch.Tensor) else np.asarray(inp.features)
        se = bootstrap_se(lambda x: frechet_distance_stats(GaussianStats.from_features(x), ref),
                          features.astype(np.float64), inp.bootstrap)
    return {"fid": value, "fid_se": se}


def _kid(inp: MetricInput) -> dict:
    _need_features(inp, "kid")
    value, se = kid_with_se(inp.features, inp.reference_features, with_se=bool(inp.bootstrap))
    return {"kid": value, "kid_se": se}


def _precision_recall(inp: MetricInput) -> dict:
    _need_features(inp, "precision_recall")
    precision, recall = precision_recall(inp.reference_features, inp.features, k=PR_K, real_radii=inp.reference_radii,
                                         world=inp.world)
    # precision is a mean of independent per-sample indicators (the reference fixed): its binomial standard error.
    # recall's indicators share the generated set, so they are not independent: half-sampling (when asked for).
    n = len(inp.features)
    recall_error = (recall_se(inp.reference_features, inp.features, k=PR_K, replicates=inp.bootstrap,
                              real_radii=inp.reference_radii, world=inp.world)
                    if inp.bootstrap and n // 2 > PR_K else None)
    return {"precision": precision, "precision_se": math.sqrt(precision * (1 - precision) / n), "recall": recall,
            "recall_se": recall_error}


def _inception_score(inp: MetricInput) -> dict:
    if inp.logits is None:  # no classifier head: empty, never a number from something else (the row says why)
        return {"is": None, "is_se": None, "is_10": None, "is_10_std": None}
    mean10, std10 = inception_score(inp.logits, splits=10) if len(inp.logits) >= 10 else (None, None)
    se = None
    if inp.bootstrap:
        logits = inp.logits.numpy() if isinstance(inp.logits, torch.Tensor) else np.asarray(inp.logits)
        se = bootstrap_se(lambda z: inception_score(z, splits=1)[0], logits.astype(np.float64), inp.bootstrap)
    return {"is": inception_score(inp.logits, splits=1)[0], "is_se": se, "is_10": mean10, "is_10_std": std10}


# w2's exact solve holds an n x n float64 cost matrix and POT's network simplex its arcs: 41-43 bytes a pair of
# points measured (peak resident memory) at n = 500 and 3000
W2_BYTES_PER_PAIR = 48
MEAN_OVER_SEEDS = "sd / sqrt(n) of per-seed values (independent seeds)"
RESAMPLED = "(only when the suite or --bootstrap asks for replicates)"   # errors that cost replicates say so

for _metric in (
    Metric("crossing_prob", ("crossing_prob", "crossing_prob_se"), False, _crossing,
           "P(segments of two random pairs intersect), 100,000 draws; 2D only; with its standard error",
           intervals=(("crossing_prob_se", "incomplete U-statistic over the samples and the 100,000 drawn pairs of "
                                           "pairs"),), needs=("z0",),
           quality=False),
    Metric("transport_cost", ("transport_cost", "transport_cost_se"), False,
           lambda inp: dict(zip(("transport_cost", "transport_cost_se"), transport_cost(inp.z0, inp.z1, True))),
           "E||Z1 - Z0||^2, with its standard error", intervals=(("transport_cost_se", MEAN_OVER_SEEDS),),
           needs=("z0",), quality=False),
    Metric("straightness", ("straightness", "straightness_se"), False, _straightness,
           "integral of E||(Z1 - Z0) - v(Z_t, t)||^2 dt of the model's flow, on a fine reference trajectory",
           scope="model", intervals=(("straightness_se", MEAN_OVER_SEEDS),), needs=("trajectory",), quality=False),
    Metric("w2", ("w2", "w2_se"), False, _w2, "exact empirical 2-Wasserstein distance to held-out target samples",
           intervals=(("w2_se", "asymptotic: sd of the samples' optimal dual potentials / sqrt(n) (CLT of del Barrio "
                                "and Loubes), delta method; reference fixed"),), needs=("reference",),
           memory=lambda n, d: W2_BYTES_PER_PAIR * n * n),
    Metric("energy", ("energy", "energy_se"), False, _energy,
           "unbiased energy distance 2E||X-Y|| - E||X-X'|| - E||Y-Y'|| to the held-out target set (10,000 points on "
           "the toy suites): 0 within its error for samples of the target itself, so no finite-sample floor",
           intervals=(("energy_se", "two-sample delete-one jackknife over the samples and the reference "
                                    "(conservative near 0)"),), needs=("reference",)),
    Metric("solver_error", ("solver_error", "solver_error_se"), False, _solver_error,
           "RMS distance of the samples to the model's own tight-tolerance ODE solution from the same x0 (no "
           "sampling floor: it ranks solvers where w2 and FID cannot); empty for stochastic and discrete samplers "
           "and one-step models",
           intervals=(("solver_error_se", "delta method on the mean squared distance over the seeds of the reference "
                                          "solution"),), needs=("exact",)),
    Metric("fid", ("fid", "fid_se"), False, _fid, "Frechet distance between feature Gaussians of samples and "
           "reference; fid_se: bootstrap standard error over the samples (when the suite asks for it)",
           intervals=(("fid_se", f"bootstrap over the samples, reference fixed {RESAMPLED}"),), needs=("features",)),
    Metric("kid", ("kid", "kid_se"), False, _kid, "unbiased MMD^2, cubic polynomial kernel, 100 subsets of up to 1000",
           intervals=(("kid_se", "delete-one jackknife of the full-set MMD^2 over the samples plus the subsets' "
                                 f"variance, reference fixed {RESAMPLED}"),),
           needs=("features", "reference_features")),
    Metric("precision_recall", ("precision", "precision_se", "recall", "recall_se"), True, _precision_recall,
           f"improved precision and recall, k={PR_K} (Kynkaanniemi et al. 2019)",
           intervals=(("precision_se", "binomial over the samples, reference fixed"),
                      ("recall_se", f"half-sampling (delete-n/2 jackknife) over the samples, reference fixed "
                                    f"{RESAMPLED}")),
           needs=("features", "reference_features", "reference_radii"), shared=True),
    Metric("inception_score", ("is", "is_se", "is_10", "is_10_std"), True, _inception_score,
           "exp E KL(p(y|x) || p(y)) on the extractor's logits: 'is' with 1 split (the rectified-flow paper), "
           "'is_10' mean and std over 10 splits",
           intervals=(("is_se", f"bootstrap over the samples {RESAMPLED}"),), needs=("logits",)),
):
    METRICS.add(_metric.name, _metric)


def register_metric(metric: Metric) -> Metric:
    """Register a metric (a plugin's own metric is registered the same way as rfbench's). Its columns must not be
    another metric's."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes an rfbench.metrics.Metric, got {type(metric).__name__}")
    taken = {col: name for name, other in METRICS.items() for col in other.columns}
    clash = [f"{col} (of {taken[col]})" for col in metric.columns if col in taken]
    if clash:
        raise ValueError(f"metric {metric.name}: column(s) {', '.join(clash)} are taken")
    return METRICS.add(metric.name, metric)


# result columns that are not metrics but still have a better direction (costs and throughput)
COST_DIRECTIONS = {"nfe": "lower", "wall_clock_s": "lower", "ms_per_nfe": "lower", "samples_per_s": "higher"}


def interval_methods() -> dict[str, str]:
    """Standard-error column -> how it is estimated (from each metric's registry entry), for table notes."""
    return {col: method for _, metric in METRICS.items() for col, method in metric.intervals}


def quality_directions() -> dict[str, str]:
    """:func:`column_directions` of the columns that rank samples (metrics registered with ``quality=True``): the
    columns a table may mark the best value of. Costs, and coupling descriptions such as transport cost, are not."""
    directions = column_directions()
    return {col: directions[col] for _, metric in METRICS.items() if metric.quality for col in metric.columns
            if col in directions}


def column_directions() -> dict[str, str]:
    """Result column -> "higher" or "lower" (which is better), from each metric's registry entry; uncertainty
    columns (``*_se``, ``*_std``) have no direction."""
    out = dict(COST_DIRECTIONS)
    for _, metric in METRICS.items():
        for col in metric.columns:
            if not col.endswith(("_se", "_std")):
                out[col] = "higher" if metric.higher_is_better else "lower"
    return out

"""Distances between point clouds (sample quality for low-dimensional suites)."""

from __future__ import annotations

import math

import numpy as np
import ot
import scipy.spatial.distance
import torch


def w2(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Exact empirical 2-Wasserstein distance between two equal-size point clouds: see :func:`w2_with_se`."""
    return w2_with_se(x, y)[0]


def w2_with_se(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> tuple[float, float | None]:
    """Exact empirical 2-Wasserstein distance between two equal-size point clouds (uniform weights), and its
    standard error over the samples ``x``, the reference ``y`` fixed.

    The optimal transport plan between uniform empirical measures of the same size is a permutation, so this is
    sqrt(min over permutations of mean ||x_i - y_perm(i)||^2) on squared Euclidean costs (float64). It is solved
    exactly with POT's network simplex (``ot.emd2``), which gives the same optimum as scipy's
    ``linear_sum_assignment`` (checked in the tests) but is faster on 2,000 points: 1.4x on good samples and 9x
    on collapsed ones (0.67 s against 6.1 s), where the assignment solver degrades.

    The standard error comes free from the same solve. By the central limit theorem for empirical transport costs
    (del Barrio and Loubes 2019; del Barrio, Gonzalez-Sanz and Loubes 2022 for a fixed discrete target),
    sqrt(N) (W2^2_N - W2^2) tends to N(0, Var phi(X)), phi the optimal dual potential of the sample side; here phi
    at x_i is the solver's dual variable u_i, so se(W2^2) = sd(u) / sqrt(N) and, by the delta method,
    se(W2) = se(W2^2) / (2 W2). The optimal duals of a discrete problem are not unique, but their spread is: the
    choice moved it by about 1% when the rows were permuted. Against the spread of W2 over 60 independent sets of
    300 points (an 8-Gaussian target; a wrong model and a perfect one) its mean came within 1%
    (tests/test_intervals.py, which allows 25%), at no cost beyond the solve. None for one point or W2 = 0.
    """
    distance, u = w2_duals(x, y)
    if len(u) < 2 or distance == 0.0:
        return distance, None
    return distance, float(np.std(u, ddof=1)) / math.sqrt(len(u)) / (2 * distance)


def w2_duals(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> tuple[float, np.ndarray]:
    """The exact empirical W2 between ``x`` and ``y`` (as :func:`w2_with_se`) and the optimal dual potential at
    each point of ``x``: W2^2 is the mean of ``u`` plus a constant, so two sample sets of the same seeds against one
    reference compare with the paired standard error sd(u_a - u_b) / sqrt(N) (:mod:`rfbench.suites.compare`)."""
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"w2 needs two clouds of the same size and dimension, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"w2: non-finite points ({int((~np.isfinite(x)).any(1).sum())} rows of x, "
                         f"{int((~np.isfinite(y)).any(1).sum())} rows of y)")
    cost = scipy.spatial.distance.cdist(x, y, metric="sqeuclidean")
    uniform = np.full(x.shape[0], 1.0 / x.shape[0])
    value, log = ot.emd2(uniform, uniform, cost, numItermax=100 * x.shape[0] ** 2, log=True)
    if log["warning"] is not None:
        raise RuntimeError(f"w2: the exact transport solver did not converge: {log['warning']}")
    return math.sqrt(max(float(value), 0.0)), np.asarray(log["u"], dtype=np.float64)


def _as_2d(a, name: str) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...), got {a.shape}")
    return a.reshape(a.shape[0], -1).astype(np.float64)

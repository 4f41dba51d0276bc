"""Distances between point clouds (sample quality for low-dimensional suites)."""

from __future__ import annotations

import math

import numpy as np
import ot
import scipy.spatial.distance
import torch


def w2(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Exact empirical 2-Wasserstein distance between two equal-size point clouds (uniform weights).

    The optimal transport plan between uniform empirical measures of the same size is a permutation, so this is
    sqrt(min over permutations of mean ||x_i - y_perm(i)||^2) on squared Euclidean costs (float64). It is solved
    exactly with POT's network simplex (``ot.emd2``), which gives the same optimum as scipy's
    ``linear_sum_assignment`` (checked in the tests) but is faster on 2,000 points: 1.4x on good samples and 9x
    on collapsed ones (0.67 s against 6.1 s), where the assignment solver degrades.
    """
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
    return math.sqrt(max(float(value), 0.0))


def _as_2d(a, name: str) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...), got {a.shape}")
    return a.reshape(a.shape[0], -1).astype(np.float64)

"""GITS: a time grid searched on the model's own trajectories (Chen et al. 2024, "On the Trajectory Regularity of
ODE-based Diffusion Sampling", Section 4).

A teacher solver runs a fine grid (``karras`` with ``fine`` steps, EDM's rho = 7) from a batch of source points; the
cost of a coarse step from fine point i to fine point j is the mean over the batch of the L2 distance between the
first-order step from the teacher's state at i (Euler on EDM's ODE dx/dsigma = (x - D(x, sigma)) / sigma, in
EDM's scaled variables x / alpha: DDIM, and on a rectified flow Euler in flow time) and the teacher's state at j.
Dynamic programming then chooses the N steps from the first fine point to the last that minimise
c(i_0, i_1) + coeff (c(i_1, i_2) + coeff (...)); the grid is those fine points' flow times.

As in the official code (zju-pi/diff-sampler, gits-main/gits_utils.py), the cost is the first-order step's whatever
solver then runs the grid: the times depend on the solver only through its step count. The search spends its own
model evaluations (the teacher's and one data prediction at each fine point but the last), which
:class:`GitsSearch` reports apart from any sampler's NFE.

The grid ``gits`` (options ``coeff``, default 1.15, and ``fine``, default 60 steps: the official code's
61 timestamps) needs source points, so :func:`rfbench.sample` cannot compute it from a name: a suite searches it
once per cell, before the cell's timed runs, from the first :data:`SEARCH_ROWS` of its seeds, records the times in
the ``grid_times`` column and the search's evaluations in ``grid_search_nfe`` and ``grid_search_rows``; elsewhere
pass ``search(model, x0, steps).times`` as the grid. The teacher runs through :func:`rfbench.sample`, so this
module imports the samplers' package and is not imported by it: :mod:`rfbench.suites` imports it (as ``import
rfbench`` does), which registers the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfbench.models.paths import data_prediction, path_of
from rfbench.samplers import SOLVERS, CountingModel, sample
from rfbench.samplers.grids import parse_grid, register_grid, time_grid
from rfbench.samplers.precision import float32_mode

COEFF = 1.15          # the official code's --coeff
FINE_STEPS = 60       # the official code's --num_steps_tea=61 timestamps
TEACHER = "heun"      # the solver that runs the fine grid
SEARCH_ROWS = 256     # the official code's --num_warmup: trajectories a suite searches on


@dataclass(frozen=True)
class GitsSearch:
    """A searched grid: ``times`` (N + 1 flow times), the chosen ``indices`` of the ``fine_times``, and the search's
    cost: ``nfe`` model evaluations per searched row (teacher and data predictions), on ``rows`` rows."""

    times: list[float]
    indices: list[int]
    fine_times: list[float]
    nfe: int | float
    rows: int


@register_grid("gits", "searched by dynamic programming on the model's own fine trajectories (GITS, Chen et al. "
                       "2024); a suite searches it per cell")
def gits(steps, path, coeff: float = COEFF, fine: float = FINE_STEPS):
    raise ValueError("grid gits is searched on the model's own trajectories from source points: a suite run searches "
                     "it once per cell; with rfbench.sample pass rfbench.samplers.gits.search(model, x0, steps).times "
                     "as the grid")


def is_searched(grid: Any) -> bool:
    """Whether ``grid`` names a grid that must be searched (:func:`search_grid`) before a sampler can run on it."""
    return isinstance(grid, str) and parse_grid(grid)[0] == "gits"


def search_grid(grid: str, model: Any, x0: torch.Tensor, steps: int, precision: str = "fp32") -> GitsSearch:
    """The search a grid name asks for (``gits``, ``gits:coeff=1.2,fine=40``) on source points ``x0``."""
    name, options = parse_grid(grid)
    if name != "gits":
        raise ValueError(f"grid {grid!r} is not searched; the searched grids are: gits")
    return search(model, x0, steps, precision=precision, **options)


def search(model: Any, x0: torch.Tensor, steps: int, *, coeff: float = COEFF, fine: float = FINE_STEPS,
           teacher: str = TEACHER, precision: str = "fp32") -> GitsSearch:
    """GITS's grid of ``steps`` steps for ``model``, searched on the trajectories from ``x0`` (B, ...).

    The teacher runs ``karras`` with ``fine`` steps (rfbench's karras: on a flow its last step goes to the data, so
    the chosen grid does too, as karras's does); see the module's docstring for the cost and the search."""
    if not (float(fine).is_integer() and steps <= fine):
        raise ValueError(f"grid gits: fine must be a whole number of steps >= the grid's {steps}, got {fine:g}")
    if not coeff > 0:
        raise ValueError(f"grid gits: coeff must be > 0, got {coeff:g}")
    if SOLVERS[teacher].kind != "fixed":
        raise ValueError(f"grid gits: the teacher must be a fixed-grid solver, got {teacher} ({SOLVERS[teacher].kind})")
    fine = int(fine)
    fine_times = time_grid("karras", fine, model)
    run = sample(model, x0, teacher, fine, grid=fine_times, trajectory=True, precision=precision)
    if run.trajectory.times.tolist() != fine_times:
        raise ValueError(f"grid gits: the teacher {teacher} must hand the callback its state at each of the fine "
                         f"grid's {fine + 1} times; it gave {len(run.trajectory.times)} points")
    states = run.trajectory.states                              # (fine + 1, B, ...) on the CPU, as the solver started
    counted = CountingModel(model, precision=precision, batch=x0.shape[0])
    with torch.no_grad(), float32_mode(precision):
        denoised = torch.stack([data_prediction(counted, states[i].to(x0.device), fine_times[i]).cpu()
                                for i in range(fine)])
    alpha, sigma = path_of(model).alpha_sigma(np.array(fine_times))
    scale = torch.as_tensor(alpha, dtype=states.dtype).reshape(-1, *[1] * (states.ndim - 1))
    cost = step_costs(states / scale, denoised, sigma / alpha)
    indices = dynamic_programming(cost, steps, coeff)
    return GitsSearch(times=[fine_times[i] for i in indices], indices=indices, fine_times=fine_times,
                      nfe=run.nfe + counted.nfe, rows=x0.shape[0])


def step_costs(states: torch.Tensor, denoised: torch.Tensor, sigmas: np.ndarray) -> np.ndarray:
    """c[i, j], i < j: the batch's mean L2 distance between the first-order step from ``states[i]`` to sigma_j and
    ``states[j]``, in EDM's scaled variables: states (F + 1, B, ...) at decreasing ``sigmas`` (F + 1; the last may
    be 0), ``denoised`` (F, B, ...) the data predictions at the first F. Zero on and below the diagonal."""
    points = states.shape[0]
    cost = np.zeros((points, points))
    for i in range(points - 1):
        d_cur = (states[i] - denoised[i]) / float(sigmas[i])
        for j in range(i + 1, points):
            step = states[i] + float(sigmas[j] - sigmas[i]) * d_cur
            cost[i, j] = float(torch.linalg.vector_norm((step - states[j]).flatten(1), dim=1).mean())
    return cost


def dynamic_programming(cost: np.ndarray, steps: int, coeff: float = COEFF) -> list[int]:
    """The fine indices 0 = i_0 < i_1 < ... < i_N = F minimising c(i_0, i_1) + coeff (c(i_1, i_2) + coeff (...))
    for an (F + 1, F + 1) cost matrix; ties go to the earliest index."""
    last = cost.shape[0] - 1
    if not 1 <= steps <= last:
        raise ValueError(f"grid gits: steps must be in [1, {last}] (the fine grid's steps), got {steps}")
    # value[k, i]: the least cost from fine point i to the last in k steps; choice[k, i]: its next point
    value = np.full((steps + 1, last + 1), np.inf)
    choice = np.zeros((steps + 1, last + 1), dtype=np.int64)
    value[1] = cost[:, last]
    for k in range(2, steps + 1):
        for i in range(last - 1):
            candidates = cost[i, i + 1:last] + coeff * value[k - 1, i + 1:last]
            best = int(np.argmin(candidates))
            value[k, i], choice[k, i] = candidates[best], i + 1 + best
    indices = [0]
    for k in range(steps, 1, -1):
        indices.append(int(choice[k, indices[-1]]))
    return indices + [last]

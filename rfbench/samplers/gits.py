"""GITS: a time grid searched on the model's own trajectories (Chen et al. 2024, "On the Trajectory Regularity of
ODE-based Diffusion Sampling", Section 4).

A teacher solver (iPNDM of order 4) runs a fine grid (``karras`` with ``fine`` steps, EDM's rho = 7) from a batch of
source points, in EDM's scaled variables x / alpha on EDM's ODE dx/dsigma = (x - D(x, sigma)) / sigma. The cost of
a coarse step from fine point i to fine point j compares the first-order step from the teacher's state at i (Euler
in sigma: DDIM) with the teacher's state at j, averaged over the batch:

* ``dev`` (the default): how far the step's end lies from the straight line through the trajectory's first and
  last points (the component of end - point orthogonal to end - start), less how far the teacher's own point j
  lies from it: a signed difference of batch means, as in the official code;
* ``l2`` / ``l1``: the L2 / L1 distance between the step's end and the teacher's point j.

Dynamic programming then chooses the N steps from the first fine point to the last that minimise
c(i_0, i_1) + coeff (c(i_1, i_2) + coeff (...)); the grid is those fine points' flow times.

The defaults are the official code's (zju-pi/diff-sampler, gits-main: sample.py's ``--solver_tea=ipndm
--max_order=4 --metric=dev --coeff=1.15 --num_warmup=256``, and its scripts' ``--num_steps_tea=61`` timestamps on
``--schedule_type=polynomial --schedule_rho=7``), and as there the cost is the first-order step's whatever solver
then runs the grid: the times depend on the solver only through its step count. rfbench's karras grid on a flow
ends with a step to the data (sigma = 0) where the official schedule stops at sigma = 0.002, so the fine grid and
the chosen one end at the data; on the same fine sigmas the search equals the official one (tests/test_gits.py).
The search spends its own model evaluations (the teacher's, and one data prediction at each fine point but the
last, taken again since the teacher's solver does not hand them out), which :class:`GitsSearch` reports apart from
any sampler's NFE (:func:`search_nfe`, before it runs).

The grid ``gits`` (options ``coeff``, ``fine`` and ``metric``: ``gits:metric=l2,coeff=1.2``) needs source points,
so :func:`rfbench.sample` cannot compute it from a name: a suite searches it once per cell, before the cell's timed
runs, from the first :data:`SEARCH_ROWS` of its seeds, records the times in the ``grid_times`` column and the
search's evaluations in ``grid_search_nfe`` and ``grid_search_rows``; elsewhere pass ``search(model, x0,
steps).times`` as the grid. The teacher runs through :func:`rfbench.sample`, so this module imports the samplers'
package and is not imported by it: :mod:`rfbench.suites` imports it (as ``import rfbench`` does), which registers
the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfbench.models.paths import data_prediction, path_of
from rfbench.samplers import SOLVERS, CountingModel, sample
from rfbench.samplers.grids import named_grid, parse_grid, register_grid, time_grid
from rfbench.samplers.precision import float32_mode

COEFF = 1.15          # the official code's --coeff
FINE_STEPS = 60       # the official scripts' --num_steps_tea=61 timestamps
TEACHER = "ipndm"     # the official --solver_tea, at its default --max_order=4 (rfbench's ipndm's default)
METRIC = "dev"        # the official --metric
METRICS = ("dev", "l2", "l1")
SEARCH_ROWS = 256     # the official code's --num_warmup: trajectories a suite searches on


@dataclass(frozen=True)
class GitsSearch:
    """A searched grid: ``times`` (N + 1 flow times), the chosen ``indices`` of the ``fine_times``, the ``cost``
    matrix they were chosen on, and the search's cost: ``nfe`` model evaluations per searched row (teacher and data
    predictions), on ``rows`` rows."""

    times: list[float]
    indices: list[int]
    fine_times: list[float]
    cost: np.ndarray
    nfe: int | float
    rows: int


@register_grid("gits", "searched by dynamic programming on the model's own fine trajectories (GITS, Chen et al. "
                       "2024); a suite searches it per cell; metric dev (default), l2 or l1")
def gits(steps, path, coeff: float = COEFF, fine: float = FINE_STEPS, metric: str = METRIC):
    raise ValueError("grid gits is searched on the model's own trajectories from source points: a suite run searches "
                     "it once per cell; with rfbench.sample pass rfbench.samplers.gits.search(model, x0, steps).times "
                     "as the grid")


def is_searched(grid: Any) -> bool:
    """Whether ``grid`` names a grid that must be searched (:func:`search_grid`) before a sampler can run on it."""
    return isinstance(grid, str) and parse_grid(grid)[0] == "gits"


def search_grid(grid: str, model: Any, x0: torch.Tensor, steps: int, precision: str = "fp32") -> GitsSearch:
    """The search a grid name asks for (``gits``, ``gits:coeff=1.2,fine=40,metric=l2``) on source points ``x0``."""
    if not is_searched(grid):
        raise ValueError(f"grid {grid!r} is not searched; the searched grids are: gits")
    return search(model, x0, steps, precision=precision, **named_grid(grid)[1])


def search_nfe(grid: Any, model: Any = None) -> int | None:
    """The model evaluations per searched row that the search of ``grid`` will spend (the teacher's on the fine grid
    and a data prediction at each fine point but the last), None for a grid that is not searched: what
    ``grid_search_nfe`` will say, for the progress bar and ``--dry-run``."""
    if not is_searched(grid):
        return None
    fine = int(parse_grid(grid)[1].get("fine", FINE_STEPS))
    return SOLVERS[TEACHER].nfe(fine, model) + fine


def search(model: Any, x0: torch.Tensor, steps: int, *, coeff: float = COEFF, fine: float = FINE_STEPS,
           metric: str = METRIC, teacher: str = TEACHER, precision: str = "fp32") -> GitsSearch:
    """GITS's grid of ``steps`` steps for ``model``, searched on the trajectories from ``x0`` (B, ...).

    The teacher runs ``karras`` with ``fine`` steps (rfbench's karras: on a flow its last step goes to the data, so
    the chosen grid does too, as karras's does); see the module's docstring for the cost and the search."""
    if not (float(fine).is_integer() and steps <= fine):
        raise ValueError(f"grid gits: fine must be a whole number of steps >= the grid's {steps}, got {fine:g}")
    if not coeff > 0:
        raise ValueError(f"grid gits: coeff must be > 0, got {coeff:g}")
    if metric not in METRICS:
        raise ValueError(f"grid gits: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if SOLVERS[teacher].kind != "fixed":
        raise ValueError(f"grid gits: the teacher must be a fixed-grid solver, got {teacher} ({SOLVERS[teacher].kind})")
    fine = int(fine)
    fine_times = time_grid("karras", fine, model)
    points: list[tuple[float, torch.Tensor]] = []
    run = sample(model, x0, teacher, fine, grid=fine_times, precision=precision,
                 callback=lambda i, t, x, v: points.append((t, x.detach().to(x0.device))))
    if [t for t, _ in points] != fine_times:
        raise ValueError(f"grid gits: the teacher {teacher} must hand the callback its state at each of the fine "
                         f"grid's {fine + 1} times; it gave {len(points)} points")
    states = torch.stack([x for _, x in points])       # (fine + 1, B, ...) in rfbench's variables, on x0's device
    counted = CountingModel(model, precision=precision, batch=x0.shape[0])
    with torch.no_grad(), float32_mode(precision):
        denoised = torch.stack([data_prediction(counted, states[i], fine_times[i]) for i in range(fine)])
    alpha, sigma = path_of(model).alpha_sigma(np.array(fine_times))
    scale = torch.as_tensor(alpha, dtype=states.dtype, device=states.device).reshape(-1, *[1] * (states.ndim - 1))
    cost = step_costs(states / scale, denoised, sigma / alpha, metric)
    indices = dynamic_programming(cost, steps, coeff)
    return GitsSearch(times=[fine_times[i] for i in indices], indices=indices, fine_times=fine_times, cost=cost,
                      nfe=run.nfe + counted.nfe, rows=x0.shape[0])


def deviation(points: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """The distance of each row of ``points`` (..., B, D) from the straight line through its ``start`` and ``end``
    (B, D): the norm of the part of end - point orthogonal to end - start. Shape (..., B)."""
    unit = (end - start) / torch.linalg.vector_norm(end - start, dim=-1, keepdim=True)
    ahead = end - points
    return torch.linalg.vector_norm(ahead - (ahead * unit).sum(-1, keepdim=True) * unit, dim=-1)


def step_costs(states: torch.Tensor, denoised: torch.Tensor, sigmas: np.ndarray, metric: str = METRIC) -> np.ndarray:
    """c[i, j], i < j: the cost ``metric`` (dev, l2, l1; see the module's docstring) of the first-order step from
    ``states[i]`` to sigma_j against ``states[j]``, in EDM's scaled variables: states (F + 1, B, ...) at decreasing
    ``sigmas`` (F + 1; the last may be 0), ``denoised`` (F, B, ...) the data predictions at the first F. Zero on and
    below the diagonal."""
    points = states.shape[0]
    flat = states.flatten(2)
    start, end = flat[0], flat[-1]
    teacher_dev = deviation(flat, start, end).mean(dim=1)       # the teacher's own points' (0 at the end)
    cost = np.zeros((points, points))
    for i in range(points - 1):
        d_cur = (flat[i] - denoised[i].flatten(1)) / float(sigmas[i])
        for j in range(i + 1, points):
            step = flat[i] + float(sigmas[j] - sigmas[i]) * d_cur
            if metric == "dev":
                cost[i, j] = float(deviation(step, start, end).mean() - teacher_dev[j])
            else:
                cost[i, j] = float(torch.linalg.vector_norm(step - flat[j], ord=1 if metric == "l1" else 2,
                                                            dim=1).mean())
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

"""GITS's searched grid: its cost matrix and dynamic programming against the official code's on the same
trajectory, and a suite cell that searches it once, records the times and keeps the search's evaluations out of the
row's NFE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rfbench.cli import main
from rfbench.models.paths import data_prediction, path_of
from rfbench.samplers import sample
from rfbench.samplers.gits import dynamic_programming, is_searched, search, step_costs
from rfbench.samplers.grids import time_grid
from rfbench.suites import Cell
from tests.problems import GaussianFlow
from tests.standins import registered, standin

# zju-pi/diff-sampler (68d5ce4), gits-main/gits_utils.py, run outside this repository in float64 (torch's default
# dtype) on the exact trajectory of _problem() at karras's 21 fine times (saved by rfbench, passed to get_dp_list as
# its teacher's trajectory and gradients, its schedule the trajectory's EDM sigmas; metric l2): get_dp_list's chosen
# indices, and entries of its cost matrix (every entry equalled rfbench's, to 0.0).
OFFICIAL_DP = {(1, 1.15): [0, 20], (1, 1.0): [0, 20], (3, 1.15): [0, 12, 14, 20], (3, 1.0): [0, 12, 14, 20],
               (5, 1.15): [0, 12, 13, 14, 15, 20], (5, 1.0): [0, 10, 12, 13, 14, 20],
               (8, 1.15): [0, 10, 11, 12, 13, 14, 15, 16, 20], (8, 1.0): [0, 8, 10, 11, 12, 13, 14, 15, 20]}
OFFICIAL_COST = {(0, 20): 1.0569838343541513, (0, 12): 0.33710306981585925, (12, 14): 0.17682188337154786,
                 (14, 20): 0.07703271688995994, (5, 19): 1.0262113883170052}
# the official dp(cost_mat, num_steps, num_steps_tea, coeff) on np.triu(default_rng(0).random((31, 31)), 1)
OFFICIAL_DP_RANDOM = {(2, 1.15): [0, 2, 30], (2, 0.8): [0, 2, 30], (4, 1.15): [0, 2, 4, 26, 30],
                      (4, 0.8): [0, 11, 24, 25, 30], (6, 1.15): [0, 3, 8, 9, 12, 25, 30],
                      (6, 0.8): [0, 3, 20, 21, 24, 25, 30], (10, 1.15): [0, 3, 8, 9, 10, 13, 20, 21, 24, 25, 30],
                      (10, 0.8): [0, 3, 8, 9, 10, 13, 20, 21, 24, 25, 30]}


def _problem():
    flow = GaussianFlow(torch.tensor([2.0, -1.0, 0.5, 1.5], dtype=torch.float64), 0.5)
    x0 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return flow, x0


def _costs(flow, states: torch.Tensor, fine_times: list[float]) -> np.ndarray:
    """step_costs on a trajectory at fine_times, as search computes them."""
    alpha, sigma = path_of(flow).alpha_sigma(np.array(fine_times))
    denoised = torch.stack([data_prediction(flow, states[i], fine_times[i]) for i in range(len(fine_times) - 1)])
    return step_costs(states / torch.from_numpy(alpha).reshape(-1, 1, 1), denoised, sigma / alpha)


def test_the_cost_matrix_and_the_dynamic_programming_are_the_official_codes_on_the_same_trajectory():
    """The flow's exact trajectory from x0 (X_t = t mu + sqrt(t^2 s^2 + (1 - t)^2) x0) at karras's fine times."""
    flow, x0 = _problem()
    fine_times = time_grid("karras", 20, flow)
    exact = torch.stack([t * flow.mu + (t * t * flow.s ** 2 + (1 - t) ** 2) ** 0.5 * x0 for t in fine_times])
    cost = _costs(flow, exact, fine_times)
    for (i, j), value in OFFICIAL_COST.items():
        assert cost[i, j] == pytest.approx(value, rel=1e-12, abs=0)
    assert np.all(np.tril(cost) == 0) and np.all(cost[np.triu_indices(21, 1)] > 0)
    for (steps, coeff), indices in OFFICIAL_DP.items():
        assert dynamic_programming(cost, steps, coeff) == indices


def test_the_search_runs_its_teacher_through_sample_and_counts_its_evaluations():
    flow, x0 = _problem()
    fine_times = time_grid("karras", 20, flow)
    teacher = sample(flow, x0, "heun", 20, grid=fine_times, trajectory=True).trajectory.states
    cost = _costs(flow, teacher, fine_times)
    for steps, coeff in ((3, 1.15), (5, 1.0), (8, 1.15)):
        found = search(flow, x0, steps, coeff=coeff, fine=20)
        assert found.indices == dynamic_programming(cost, steps, coeff) and len(found.indices) == steps + 1
        assert found.times == [fine_times[i] for i in found.indices] and found.fine_times == fine_times
        assert found.nfe == 2 * 20 + 20 and found.rows == 16     # heun's 40 and a data prediction at 20 points
        assert found.times[-1] == 1 and found.times[0] == pytest.approx(1 / 81, rel=1e-12)   # karras's ends


@pytest.mark.parametrize("steps,coeff", list(OFFICIAL_DP_RANDOM))
def test_the_dynamic_programming_is_the_official_codes_on_a_random_cost_matrix(steps, coeff):
    cost = np.triu(np.random.default_rng(0).random((31, 31)), 1)
    assert dynamic_programming(cost, steps, coeff) == OFFICIAL_DP_RANDOM[(steps, coeff)]


def test_a_searched_grid_needs_its_search_and_says_so():
    flow, x0 = _problem()
    assert is_searched("gits") and is_searched("gits:coeff=1.2") and not is_searched("karras")
    assert not is_searched([0.0, 1.0])
    with pytest.raises(ValueError, match="grid gits is searched on the model's own trajectories"):
        sample(flow, x0, "euler", 4, grid="gits")
    with pytest.raises(ValueError, match=r"grid gits got unknown option\(s\) rho; it takes: coeff, fine"):
        sample(flow, x0, "euler", 4, grid="gits:rho=2")
    with pytest.raises(ValueError, match="grid gits: fine must be a whole number of steps >= the grid's 6, got 4"):
        search(flow, x0, 6, fine=4)
    with pytest.raises(ValueError, match="grid gits: coeff must be > 0, got 0"):
        search(flow, x0, 3, coeff=0)
    with pytest.raises(ValueError, match=r"grid gits: steps must be in \[1, 30\] \(the fine grid's steps\), got 31"):
        dynamic_programming(np.zeros((31, 31)), 31)


def test_a_suite_cell_on_gits_records_the_times_and_the_search_apart_from_its_nfe(tmp_path):
    flow = GaussianFlow(torch.tensor([1.0, -2.0]), 0.5)
    suite = standin("toy2d", "toy2d-gits", {"gauss": flow},
                    cells=(Cell("gauss", "euler", 4, grid="gits:fine=12"), Cell("gauss", "heun", 3, grid="gits"),
                           Cell("gauss", "midpoint", 4, grid="gits:fine=3")), num_samples=100)
    with registered(suite):
        assert main(["--suite", "toy2d-gits", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                     "--quiet", "--device", "cpu", "--no-plots"]) == 1                 # the midpoint cell failed
    frame = pd.read_csv(tmp_path / "out" / "results.csv").set_index("solver")
    assert list(frame["status"]) == ["ok", "ok", "ok", "failed"]                  # the independent row first
    assert frame.loc["midpoint", "error"] == ("grid gits:fine=3: ValueError: grid gits: fine must be a whole number "
                                              "of steps >= the grid's 4, got 3")
    euler, heun = frame.loc["euler"], frame.loc["heun"]
    assert euler["grid"] == "gits:fine=12" and heun["grid"] == "gits"
    assert (euler["nfe"], heun["nfe"]) == (4, 6)                        # the sampler's own, without the search's
    assert (euler["grid_search_nfe"], heun["grid_search_nfe"]) == (2 * 12 + 12, 2 * 60 + 60)
    assert euler["grid_search_rows"] == heun["grid_search_rows"] == 100     # the first seeds, up to 256
    x0 = suite.problem.initial(list(range(100)))
    for row, steps, options in ((euler, 4, {"fine": 12}), (heun, 3, {})):
        times = [float(t) for t in row["grid_times"].split(",")]
        assert times == search(flow, x0, steps, **options).times and len(times) == steps + 1

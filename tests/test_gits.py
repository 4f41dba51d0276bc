"""GITS's searched grid: the whole search (iPNDM teacher, cost, dynamic programming) against the official code's on
the same inputs, the cost matrix and dynamic programming on an exact trajectory, and a suite cell that searches it
once, records the times, keeps the search's evaluations out of the row's NFE and puts them on the progress bar and
in --dry-run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rfbench.cli import main
from rfbench.models.paths import data_prediction, path_of
from rfbench.progress import Progress
from rfbench.samplers import sample
from rfbench.samplers.gits import dynamic_programming, is_searched, search, search_nfe, step_costs
from rfbench.samplers.grids import time_grid
from rfbench.suites import Cell, runner
from tests.problems import GaussianFlow, GaussianMixtureFlow
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

# The whole official search, gits_utils.get_dp_list (68d5ce4) with its defaults (solver_tea ipndm, max_order 4,
# num_steps_tea 61; metric and coeff as keyed; num_warmup = batch = 16), run outside this repository in float64 on
# rfbench's inputs: the network the closed-form denoiser of MIXTURE (x reshaped to (16, 2, 1, 1)), the latents
# _mixture_x0(), and solvers.get_schedule returning the EDM sigmas of rfbench's karras:fine=60 grid (EDM's 60
# polynomial sigmas from 80 to 0.002, then 0: rfbench's karras ends at the data on a flow), all_reduce on one
# process. Its teacher trajectory equalled rfbench's iPNDM run to 2.8e-14 (states up to 185), its cost matrices
# rfbench's to 2.4e-15 (dev), 7.4e-15 (l2), 9.0e-15 (l1); the indices it chose, (steps, metric, coeff) -> indices
# (and 54 more cases, 20 and 60 fine steps, 3-10 steps, all three metrics, every one equal):
OFFICIAL_SEARCH = {
    (3, "dev", 1.15): [0, 32, 36, 60], (3, "dev", 1.0): [0, 31, 35, 60],
    (4, "dev", 1.15): [0, 30, 34, 36, 60], (4, "dev", 1.0): [0, 29, 33, 36, 60],
    (5, "dev", 1.15): [0, 31, 35, 38, 43, 60], (5, "dev", 1.0): [0, 27, 31, 34, 36, 60],
    (6, "dev", 1.15): [0, 31, 35, 38, 43, 46, 60], (6, "dev", 1.0): [0, 25, 29, 32, 34, 36, 60],
    (8, "dev", 1.15): [0, 29, 32, 34, 36, 38, 43, 46, 60], (8, "dev", 1.0): [0, 26, 30, 33, 35, 37, 43, 46, 60],
    (10, "dev", 1.15): [0, 29, 32, 34, 36, 37, 39, 43, 46, 49, 60],
    (10, "dev", 1.0): [0, 22, 27, 30, 32, 34, 36, 38, 43, 46, 60],
    (4, "l2", 1.15): [0, 32, 37, 43, 60], (4, "l2", 1.0): [0, 30, 35, 41, 60],
    (8, "l2", 1.15): [0, 28, 32, 35, 37, 40, 43, 47, 60], (8, "l2", 1.0): [0, 23, 28, 31, 34, 37, 40, 44, 60],
    (4, "l1", 1.15): [0, 31, 36, 43, 60], (4, "l1", 1.0): [0, 30, 35, 42, 60],
    (8, "l1", 1.15): [0, 28, 32, 35, 37, 40, 43, 47, 60], (8, "l1", 1.0): [0, 22, 27, 30, 33, 36, 40, 44, 60],
}
# the flow times it chose with the defaults (metric dev, coeff 1.15), as the row's grid_times would hold them
OFFICIAL_TIMES = {
    5: [0.012345679012345684, 0.33379938938999143, 0.4914932777484001, 0.623084150107057, 0.8175947185784115, 1.0],
    10: [0.012345679012345684, 0.2693751667129248, 0.3699372569583523, 0.44913740772478494, 0.5350260623894367,
         0.5791177805447816, 0.666213115942513, 0.8175947185784115, 0.8979691140080448, 0.9489052102608028, 1.0],
}
# entries (i, j) of its cost matrices
OFFICIAL_SEARCH_COST = {
    "dev": {(0, 60): 0.46689786179427056, (0, 31): 0.11293654629175331, (31, 35): 0.049591573810089884,
            (43, 60): 0.019863561192180256, (10, 50): 0.4574302411115535, (59, 60): 6.957091174462852e-07},
    "l2": {(0, 60): 1.3312504909076228, (0, 31): 0.34775326653390026, (31, 35): 0.09654664498075557,
           (43, 60): 0.04981021655271486, (10, 50): 1.2520020159439824, (59, 60): 1.7437924356409222e-06},
    "l1": {(0, 60): 1.6994057153951623, (0, 31): 0.4559528756038599, (31, 35): 0.12486558894916876,
           (43, 60): 0.06435325653308908, (10, 50): 1.5976202762806688, (59, 60): 2.2476100041779554e-06},
}
MIXTURE = GaussianMixtureFlow([0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [0.4, 0.7])


def _mixture_x0() -> torch.Tensor:
    return torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _problem():
    flow = GaussianFlow(torch.tensor([2.0, -1.0, 0.5, 1.5], dtype=torch.float64), 0.5)
    x0 = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return flow, x0


def _costs(flow, states: torch.Tensor, fine_times: list[float], metric: str) -> np.ndarray:
    """step_costs on a trajectory at fine_times, as search computes them."""
    alpha, sigma = path_of(flow).alpha_sigma(np.array(fine_times))
    denoised = torch.stack([data_prediction(flow, states[i], fine_times[i]) for i in range(len(fine_times) - 1)])
    return step_costs(states / torch.from_numpy(alpha).reshape(-1, 1, 1), denoised, sigma / alpha, metric)


def test_the_search_is_the_official_codes_on_the_same_inputs():
    """Teacher, cost and dynamic programming together, with the official defaults (the pins above)."""
    fine_times = time_grid("karras", 60, MIXTURE)
    for (steps, metric, coeff), indices in OFFICIAL_SEARCH.items():
        found = search(MIXTURE, _mixture_x0(), steps, coeff=coeff, metric=metric)
        assert found.indices == indices and found.times == [fine_times[i] for i in indices]
        if coeff == 1.15 and metric == "dev":          # the defaults
            assert search(MIXTURE, _mixture_x0(), steps).indices == indices
            if steps in OFFICIAL_TIMES:
                assert found.times == pytest.approx(OFFICIAL_TIMES[steps], rel=1e-14, abs=0)
        for (i, j), value in OFFICIAL_SEARCH_COST[metric].items():
            assert found.cost[i, j] == pytest.approx(value, rel=1e-12, abs=1e-14)
    assert found.nfe == 60 + 60 == search_nfe("gits") and found.rows == 16     # the teacher's, then D at 60 points


def test_the_dev_cost_is_a_steps_distance_from_the_trajectorys_chord_less_the_teachers():
    """By hand on a 2-point batch: the chord from each row's first point to its last, the step's and the teacher's
    distances from it, averaged over the rows."""
    states = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [1.0, 1.0]], [[4.0, 0.0], [0.0, 2.0]]],
                          dtype=torch.float64)                      # (3 points, 2 rows, 2): chords along x and y
    sigmas = np.array([2.0, 1.0, 0.0])
    denoised = torch.stack([states[0] - sigmas[0] * torch.tensor([[-1.0, -3.0], [0.5, 0.0]], dtype=torch.float64),
                            states[1] - sigmas[1] * torch.tensor([[0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)])
    cost = step_costs(states, denoised, sigmas, "dev")
    # steps: 0 -> 1 lands at (1, 3) and (-0.5, 0): distances 3 and 0.5; the teacher's point 1: 2 and 1
    assert cost[0, 1] == pytest.approx((3 + 0.5) / 2 - (2 + 1) / 2, abs=1e-15)
    # 0 -> 2 lands at (2, 6) and (-1, 0), distances 6 and 1; the teacher's last point lies on the chord
    assert cost[0, 2] == pytest.approx((6 + 1) / 2, abs=1e-15)
    assert cost[1, 2] == pytest.approx((3 + 1) / 2, abs=1e-15)     # 1 -> 2 lands at (1, 3) and (1, 1)
    assert np.all(np.tril(cost) == 0)


def test_the_cost_matrix_and_the_dynamic_programming_are_the_official_codes_on_the_same_trajectory():
    """The flow's exact trajectory from x0 (X_t = t mu + sqrt(t^2 s^2 + (1 - t)^2) x0) at karras's fine times."""
    flow, x0 = _problem()
    fine_times = time_grid("karras", 20, flow)
    exact = torch.stack([t * flow.mu + (t * t * flow.s ** 2 + (1 - t) ** 2) ** 0.5 * x0 for t in fine_times])
    cost = _costs(flow, exact, fine_times, "l2")
    for (i, j), value in OFFICIAL_COST.items():
        assert cost[i, j] == pytest.approx(value, rel=1e-12, abs=0)
    assert np.all(np.tril(cost) == 0) and np.all(cost[np.triu_indices(21, 1)] > 0)
    for (steps, coeff), indices in OFFICIAL_DP.items():
        assert dynamic_programming(cost, steps, coeff) == indices


@pytest.mark.parametrize("teacher,teacher_nfe", [("ipndm", 20), ("heun", 40)])
def test_the_search_runs_its_teacher_through_sample_and_counts_its_evaluations(teacher, teacher_nfe):
    x0 = _mixture_x0()
    fine_times = time_grid("karras", 20, MIXTURE)
    states = sample(MIXTURE, x0, teacher, 20, grid=fine_times, trajectory=True).trajectory.states
    for metric in ("dev", "l2"):
        cost = _costs(MIXTURE, states, fine_times, metric)
        for steps, coeff in ((3, 1.15), (5, 1.0), (8, 1.15)):
            found = search(MIXTURE, x0, steps, coeff=coeff, fine=20, metric=metric, teacher=teacher)
            assert found.indices == dynamic_programming(cost, steps, coeff) and len(found.indices) == steps + 1
            assert found.times == [fine_times[i] for i in found.indices] and found.fine_times == fine_times
            assert found.nfe == teacher_nfe + 20 and found.rows == 16    # the teacher's and D at 20 fine points
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
    with pytest.raises(ValueError, match=r"grid gits got unknown option\(s\) rho; it takes: coeff, fine, metric"):
        sample(flow, x0, "euler", 4, grid="gits:rho=2")
    with pytest.raises(ValueError, match="grid gits: option metric takes a word, got 2.0"):
        sample(flow, x0, "euler", 4, grid="gits:metric=2")
    with pytest.raises(ValueError, match="grid karras: option rho takes a number, got 'seven'"):
        sample(flow, x0, "euler", 4, grid="karras:rho=seven")
    with pytest.raises(ValueError, match="grid 'gits:metric=l-2': options are written name:key=value"):
        sample(flow, x0, "euler", 4, grid="gits:metric=l-2")
    with pytest.raises(ValueError, match="grid gits: metric must be one of dev, l2, l1, got 'cos'"):
        search(flow, x0, 3, metric="cos")
    with pytest.raises(ValueError, match="grid gits: fine must be a whole number of steps >= the grid's 6, got 4"):
        search(flow, x0, 6, fine=4)
    with pytest.raises(ValueError, match="grid gits: coeff must be > 0, got 0"):
        search(flow, x0, 3, coeff=0)
    with pytest.raises(ValueError, match=r"grid gits: steps must be in \[1, 30\] \(the fine grid's steps\), got 31"):
        dynamic_programming(np.zeros((31, 31)), 31)


def _gits_suite(name: str, cells):
    return standin("toy2d", name, {"mix": MIXTURE}, cells=cells, num_samples=100)


def test_a_suite_cell_on_gits_records_the_times_and_the_search_apart_from_its_nfe(tmp_path):
    suite = _gits_suite("toy2d-gits", (
        Cell("mix", "euler", 4, grid="gits:fine=12"), Cell("mix", "heun", 3, grid="gits"),
        Cell("mix", "ipndm", 3, grid="gits:metric=l2"),
        Cell("mix", "midpoint", 4, grid="gits:fine=3")))
    with registered(suite):
        assert main(["--suite", "toy2d-gits", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                     "--quiet", "--device", "cpu", "--no-plots"]) == 1                 # the midpoint cell failed
    frame = pd.read_csv(tmp_path / "out" / "results.csv").set_index("solver")
    assert list(frame["status"]) == ["ok", "ok", "ok", "ok", "failed"]            # the independent row first
    assert frame.loc["midpoint", "error"] == ("grid gits:fine=3: ValueError: grid gits: fine must be a whole number "
                                              "of steps >= the grid's 4, got 3")
    euler, heun, ipndm = frame.loc["euler"], frame.loc["heun"], frame.loc["ipndm"]
    assert (euler["grid"], heun["grid"], ipndm["grid"]) == ("gits:fine=12", "gits", "gits:metric=l2")
    assert (euler["nfe"], heun["nfe"], ipndm["nfe"]) == (4, 6, 3)      # the sampler's own, without the search's
    assert (euler["grid_search_nfe"], heun["grid_search_nfe"], ipndm["grid_search_nfe"]) == (12 + 12, 120, 120)
    assert euler["grid_search_rows"] == heun["grid_search_rows"] == 100     # the first seeds, up to 256
    x0 = suite.problem.initial(list(range(100)))
    for row, steps, options in ((euler, 4, {"fine": 12}), (heun, 3, {}), (ipndm, 3, {"metric": "l2"})):
        times = [float(t) for t in row["grid_times"].split(",")]
        assert times == search(MIXTURE, x0, steps, **options).times and len(times) == steps + 1
    assert heun["grid_times"] != ipndm["grid_times"]                    # dev and l2 chose differently here


def test_the_progress_bar_and_the_dry_run_count_the_search(tmp_path, monkeypatch, capsys):
    """A gits cell's work is its NFE x samples and its search's NFE x searched rows, on the bar from the start
    and in --dry-run's sample-evaluations."""
    finished: dict[str, tuple[float, float]] = {}

    class Ledger(Progress):
        def finish(self, key, work):
            finished[key] = (self.pending.get(key, (0.0,))[0], work)
            super().finish(key, work)
    suite = _gits_suite("toy2d-gits-work", (Cell("mix", "euler", 4, grid="gits:fine=12"),
                                            Cell("mix", "ipndm", 3, grid="gits"), Cell("mix", "euler", 4)))
    common = ["--suite", "toy2d-gits-work", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
              "--device", "cpu", "--no-plots"]
    with registered(suite):
        assert main(common + ["--dry-run"]) == 0
        dry = capsys.readouterr().out
        monkeypatch.setattr(runner, "Progress", Ledger)
        assert main(common + ["--quiet"]) == 0
    assert search_nfe("gits:fine=12") == 24 and search_nfe("gits") == 120 and search_nfe("karras") is None
    assert finished["mix/euler/4@gits:fine=12"] == (4 * 100 + 24 * 100,) * 2
    assert finished["mix/ipndm/3@gits"] == (3 * 100 + 120 * 100,) * 2
    assert finished["mix/euler/4"] == (4 * 100,) * 2
    lines = {line.split()[0]: line for line in dry.splitlines() if line.startswith("    mix/")}
    assert lines["mix/euler/4@gits:fine=12"].endswith("to compute (+ its grid's search: 2.4k sample-evaluations)")
    assert lines["mix/ipndm/3@gits"].endswith("to compute (+ its grid's search: 12k sample-evaluations)")
    assert lines["mix/euler/4"].endswith("to compute")
    assert "3 cell(s) to compute, 15.5k sample-evaluations" in dry     # (4 + 3 + 4) x 100 + 2400 + 12000

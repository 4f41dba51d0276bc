"""Paired comparisons of two cells of a run (rfbench compare): the differences and their paired standard errors,
checked against the per-seed values computed here from the suite's own x0, and against the run's recorded
marginal numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rfbench.metrics.coupling import crossing_prob
from rfbench.suites import SUITES, Cell
from rfbench.suites.compare import Coupling, compare_couplings, parse_cell
from tests.standins import registered, standin
from tests.test_bad_input_cli import run_cli


class Linear:
    """dx/dt = a x: z1 = z0 exp(a), a map whose coupling is known exactly."""

    input_shape = (2,)

    def __init__(self, a: float):
        self.a = a

    def __call__(self, x, t):
        return self.a * x


class Rotate:
    """A rotation field: paths curve, so straight segments of the coupling cross."""

    input_shape = (2,)

    def __call__(self, x, t):
        return torch.stack([-x[:, 1], x[:, 0]], dim=1) * 2.0 + 0.5


@pytest.fixture
def linear_suite():
    suite = standin("toy2d", "toy2d-linear", {"grow": Linear(0.5), "shrink": Linear(-0.2), "rotate": Rotate()},
                    cells=(Cell("grow", "rk45"), Cell("shrink", "rk45"), Cell("rotate", "rk4", 8)),
                    num_samples=400)
    with registered(suite):
        yield suite


def test_compare_gives_paired_differences_and_their_errors(linear_suite, tmp_path):
    out = tmp_path / "run"
    argv = ["--suite", "toy2d-linear", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet",
            "--no-plots"]
    assert run_cli(argv)[0] == 0
    code, err, _, _ = run_cli(["compare", str(out), "--a", "grow/rk45", "--b", "shrink/rk45"])
    assert code == 2 and "--save-samples" in err and err.count("\n") == 1, err      # samples were not saved
    assert run_cli(argv + ["--save-samples"])[0] == 0     # the kept cells are sampled again for their samples
    code, err, text, _ = run_cli(["compare", str(out), "--a", "grow/rk45", "--b", "shrink/rk45", "--format", "csv"])
    assert code == 0, err
    table = pd.read_csv(__import__("io").StringIO(text)).set_index("metric")
    # per seed: ||z0 (e^a - 1)||^2, computed here from the suite's x0
    z0 = SUITES["toy2d-linear"].problem.initial(list(range(400))).double()
    d = ((z0 * (math.exp(0.5) - 1)) ** 2).sum(1) - ((z0 * (math.exp(-0.2) - 1)) ** 2).sum(1)
    row = table.loc["transport_cost"]
    assert row["a_minus_b"] == pytest.approx(d.mean().item(), rel=1e-3)          # rk45's error, not the pairing
    assert row["paired_se"] == pytest.approx(d.std().item() / math.sqrt(400), rel=1e-2)
    assert bool(row["resolved"]) and row["better"] == "b"
    # the same comparison as a column of the table: every cell against one, paired
    code, err, text, _ = run_cli(["table", str(out), "--paired-with", "shrink/rk45", "--format", "csv"])
    assert code == 0, err
    paired = pd.read_csv(__import__("io").StringIO(text)).set_index("cell")
    assert paired.loc["grow/rk45", "transport_cost_minus_base"] == pytest.approx(row["a_minus_b"], rel=1e-12)
    assert paired.loc["grow/rk45", "transport_cost_paired_se"] == pytest.approx(row["paired_se"], rel=1e-12)
    assert paired.loc["shrink/rk45", "transport_cost_minus_base"] == 0 and "independent" in paired.index
    code, err, text, _ = run_cli(["table", str(out), "--paired-with", "shrink/rk45"])
    assert code == 0 and "grow/rk45" in text and " *" in text, err
    recorded = pd.read_csv(out / "results.csv").set_index("model")
    assert table.loc["w2", "a"] == pytest.approx(recorded.loc["grow", "w2"], rel=1e-9)
    assert table.loc["w2", "b"] == pytest.approx(recorded.loc["shrink", "w2"], rel=1e-9)
    assert table.loc["transport_cost", "a"] == pytest.approx(recorded.loc["grow", "transport_cost"], rel=1e-9)
    code, err, text, _ = run_cli(["compare", str(out), "--a", "independent", "--b", "rotate/rk4/8", "--draws",
                                  "100000", "--format", "csv"])   # the metric's own draws
    assert code == 0, err
    crossing = pd.read_csv(__import__("io").StringIO(text)).set_index("metric").loc["crossing_prob"]
    assert crossing["a"] == pytest.approx(recorded.loc["independent", "crossing_prob"], abs=1e-12)
    assert crossing["b"] == pytest.approx(recorded.loc["rotate", "crossing_prob"], abs=1e-12)
    for bad, word in ((["--a", "nope/rk45"], "nope/rk45"), (["--a", "grow"], "MODEL/SOLVER"),
                      (["--a", "grow/rk45/x"], "STEPS")):
        code, err, _, _ = run_cli(["compare", str(out), *bad, "--b", "shrink/rk45"])
        assert code == 2 and word in err and err.count("\n") == 1, err


def swirl(z: torch.Tensor) -> torch.Tensor:
    """Each point turned by an angle that grows with its radius: segments (z, swirl(z)) cross often."""
    angle = 1.5 * z.norm(dim=1)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * z[:, 0] - s * z[:, 1], s * z[:, 0] + c * z[:, 1]], dim=1)


def test_the_paired_error_is_the_spread_of_the_difference_over_resampled_seeds():
    """Two correlated couplings of the same x0: the paired standard errors of w2, energy, transport cost and crossing
    probability against the spread of the difference over 60 independent sets of seeds."""
    gen = torch.Generator().manual_seed(3)
    ref_gen = torch.Generator().manual_seed(99)
    target = lambda n, g: torch.randn((n, 2), generator=g) * 0.7 + torch.tensor([2.0, 0.0])   # noqa: E731
    n, diffs, ses = 300, {"w2": [], "energy": [], "transport_cost": [], "crossing_prob": []}, {}
    reference = target(n, ref_gen)
    for _ in range(60):
        z0 = torch.randn((n, 2), generator=gen)
        a = Coupling("a", z0, swirl(z0) * 0.7 + torch.tensor([2.0, 0.0]), np.arange(n))
        b = Coupling("b", z0, swirl(z0) * 0.6 + torch.tensor([2.1, 0.1]) + 0.1 * torch.randn((n, 2), generator=gen),
                     np.arange(n))
        table = compare_couplings(a, b, ("w2", "transport_cost", "crossing_prob"), reference, draws=4000)
        # energy's error counts the reference's sampling too (its jackknife leaves out reference points): a fresh
        # reference each set (with the reference fixed, the seeds' part alone was 14% above the spread)
        table = pd.concat([table, compare_couplings(a, b, ("energy",), target(n, ref_gen))]).set_index("metric")
        for metric in diffs:
            diffs[metric].append(table.loc[metric, "a_minus_b"])
            ses.setdefault(metric, []).append(table.loc[metric, "paired_se"])
    for metric in diffs:
        spread, mean_se = float(np.std(diffs[metric], ddof=1)), float(np.mean(ses[metric]))
        assert mean_se == pytest.approx(spread, rel=0.35), (metric, mean_se, spread)
    # and the pairing pays: the two marginal errors combined are far larger than the paired one
    _, se_a = crossing_prob(a.z0, a.z1, num_draws=4000)
    _, se_b = crossing_prob(b.z0, b.z1, num_draws=4000)
    assert ses["crossing_prob"][-1] < 0.7 * math.hypot(se_a, se_b), (ses["crossing_prob"][-1], se_a, se_b)


def test_cell_names():
    assert parse_cell("1-rf/euler/4") == {"model": "1-rf", "solver": "euler", "steps": 4}
    assert parse_cell("1-rf/rk45") == {"model": "1-rf", "solver": "rk45"}
    assert parse_cell("ddpm/dpm++2m/8/logsnr") == {"model": "ddpm", "solver": "dpm++2m", "steps": 8,
                                                   "grid": "logsnr"}
    assert parse_cell("independent") == {"model": "independent"}
    for bad in ("1-rf", "/euler", "a/b/c/d/e", "1-rf/euler/four"):
        with pytest.raises(ValueError):
            parse_cell(bad)

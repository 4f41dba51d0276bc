"""The three examples, run as a user runs them: the solver plugin and the model plugin through the CLI beside
rfbench's toy2d models (trained once for the session by the ``toy2d`` fixture), and the notebook-style script
through the API."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import pandas as pd
import pytest
import torch

from rfbench.cli import main
from rfbench.models.cache import Cache
from rfbench.models.sources import LoadContext
from rfbench.plugins import load_plugin
from rfbench.samplers import sample
from rfbench.suites import SUITES
from tests.problems import TangentODE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
AB2 = str(EXAMPLES / "ab2_solver.py")
OT = str(EXAMPLES / "ot_flow_model.py")

pytestmark = pytest.mark.slow


def test_ab2_is_second_order_at_one_evaluation_per_step():
    load_plugin(AB2)
    flow = TangentODE()
    x0 = torch.linspace(-0.5, 0.5, 5, dtype=torch.float64).reshape(-1, 1)
    exact = TangentODE.exact(x0)
    errors = []
    for steps in (16, 32, 64, 128):
        result = sample(flow, x0, "ab2", steps)
        assert result.nfe == steps
        errors.append(float((result.x - exact).abs().max()))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.8 < order < 2.3 for order in orders), orders
    torch.testing.assert_close(sample(flow, x0, "ab2", 1).x, sample(flow, x0, "euler", 1).x, rtol=0, atol=0)


def test_solver_plugin_through_the_cli_beside_rfbench_solvers(toy2d, tmp_path, capsys):
    cache = toy2d[2]
    argv = ["--suite", "toy2d", "--plugin", AB2, "--models", "1-rf", "2-rf", "--solvers", "euler", "ab2",
            "--num-samples", "500", "--cache", str(cache), "--device", "cpu"]
    assert main(argv + ["--dry-run"]) == 0
    listed = capsys.readouterr().out
    lines = {line.split()[0]: line for line in listed.splitlines() if line.startswith("    1-rf/")}
    assert lines["1-rf/ab2/32"].endswith(f"NFE 32     to compute  [--plugin {AB2}]")
    assert lines["1-rf/euler/32"].endswith("NFE 32     to compute")
    assert main(argv + ["--out", str(tmp_path / "out"), "--quiet", "--no-plots"]) == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    ab2 = frame[frame["solver"] == "ab2"]
    assert sorted(set(ab2["model"])) == ["1-rf", "2-rf"] and sorted(set(ab2["steps"])) == [1, 2, 4, 8, 16, 32]
    assert (ab2["nfe"] == ab2["steps"]).all() and (ab2["status"] == "ok").all()
    w2 = frame.set_index(["model", "solver", "steps"])["w2"]
    assert w2[("1-rf", "ab2", 1)] == w2[("1-rf", "euler", 1)]       # one AB2 step is an Euler step
    # second order at Euler's cost: on the trained 1-RF's curved paths AB2 ends nearer the exact endpoint (rk45 at
    # tight tolerances) at equal NFE, and its error falls about four times per halving of the step
    suite = SUITES["toy2d"]
    flow = suite.model("1-rf").source.load(LoadContext(suite, Cache(cache, log=lambda msg: None), torch.device("cpu")))
    x0 = suite.problem.initial(range(500))
    exact = sample(flow, x0, "rk45", rtol=1e-8, atol=1e-8).x
    error = {(solver, n): float((sample(flow, x0, solver, n).x - exact).norm(dim=1).mean())
             for solver in ("euler", "ab2") for n in (8, 16, 32)}
    assert all(error[("ab2", n)] < 0.5 * error[("euler", n)] for n in (8, 16, 32)), error
    assert error[("ab2", 16)] / error[("ab2", 32)] > 3, error


def test_model_plugin_trains_its_recipe_once_and_its_coupling_is_straighter(toy2d, tmp_path, capsys):
    cache = toy2d[2]
    argv = ["--suite", "toy2d", "--plugin", OT, "--models", "1-rf", "ot-cfm", "--solvers", "euler", "rk45",
            "--steps", "1", "4", "--num-samples", "1000", "--cache", str(cache), "--device", "cpu", "--no-plots"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 0
    assert "training ot-cfm" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    ours = frame[frame["model"] == "ot-cfm"].set_index(["solver", "steps"])
    assert len(ours) == 3 and (ours["model_source"] == "recipe").all() and (ours["model_kind"] == "flow").all()
    assert ours["model_id"].str.fullmatch(r"recipe:[0-9a-f]{12}").all()
    assert ours["model_checkpoint"].str.startswith("ot-cfm-").all()
    rf = frame[frame["model"] == "1-rf"].set_index(["solver", "steps"])
    # minibatch OT pairs noise and data nearly straight in one training, where rectified flow needs reflow
    assert ours["straightness"].iloc[0] < 0.5 * rf["straightness"].iloc[0]
    assert ours.loc[("euler", 1), "w2"] < rf.loc[("euler", 1), "w2"]
    # a second run loads it from the cache
    assert main(argv + ["--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert "training ot-cfm" not in capsys.readouterr().out
    # a suite of another shape refuses it before any work, naming both shapes
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "digits", "--plugin", OT, "--models", "ot-cfm", "--cache", str(tmp_path / "cache"),
              "--out", str(tmp_path / "digits")])
    assert exc.value.code == 2
    assert ("model ot-cfm (flow, minibatch OT conditional flow matching (examples/ot_flow_model.py, recipe "
            in capsys.readouterr().err)
    assert not (tmp_path / "cache").exists()


def test_notebook_example_through_the_api(toy2d, monkeypatch, capsys):
    monkeypatch.setenv("RFBENCH_CACHE", str(toy2d[2]))       # the session's trained toy2d models: nothing trains
    runpy.run_path(str(EXAMPLES / "notebook.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["2-rf", "ab2"] for line in lines)
    radial = [line.split() for line in lines if line.split()[:1] == ["radial"]]
    assert len(radial) == 2 and all(float(r[-1]) < 1e-4 for r in radial)     # a straight flow: straightness ~0

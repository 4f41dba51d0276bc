"""The open doors: registries with origins, plugins from files, modules and entry points, the checks a plugin's
solver gets, models from files of other codebases (--model), the Python API, and samples scored from files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import rfbench
from rfbench.cli import main
from rfbench.models import MLPConfig, build_network, network_spec, save_checkpoint
from rfbench.plugins import PluginError, load_plugin
from rfbench.registry import DuplicateNameError, Registry, registering_from
from rfbench.samplers import SOLVERS, sample
from rfbench.suites import SUITES, Cell
from tests.problems import GaussianEpsNet, TangentODE
from tests.standins import registered, standin

ROOT = Path(__file__).resolve().parents[1]


class Shift(torch.nn.Module):
    """A constant velocity (0.5, 0.5): every point moves by it; scriptable."""

    input_shape = (2,)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.5)


class CountingShift(Shift):
    """Shift, counting its evaluations."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x, t)


def shift_factory(device):
    return Shift().to(device)


def test_registry_records_origins_refuses_duplicates_and_rolls_back_a_failed_plugin():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    assert reg.origin("a") == __name__                      # the module that registered it
    with registering_from("--plugin mine.py"):
        reg.add("b", 2)
    assert reg.origin("b") == "--plugin mine.py"
    with pytest.raises(DuplicateNameError, match=r"widget 'b' is already registered \(by --plugin mine.py\); choose "
                                                 r"another name"):
        reg.add("b", 3)
    with pytest.raises(RuntimeError), registering_from("--plugin half.py"):
        reg.add("c", 4)
        raise RuntimeError("the plugin failed after registering c")
    assert "c" not in reg and reg.names() == ["a", "b"]       # nothing of a failed plugin stays
    assert reg.remove("a") == 1 and "a" not in reg
    with pytest.raises(KeyError, match="Unknown widget 'zz'"):
        reg.remove("zz")
    with pytest.raises(KeyError, match=r"Unknown widget \['b'\]"):
        reg[["b"]]                                          # a list is not a name: the same clear error


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_plugin_files_register_with_their_origin_and_fail_in_one_line(tmp_path, capsys):
    good = _write(tmp_path / "half_euler.py", """
        import rfbench

        @rfbench.register_solver("half-euler", "fixed", order=1, expected_nfe=lambda n: n, description="test")
        def half_euler(model, x, *, times, callback=None, gain: float = 1.0):
            for t_cur, t_next in zip(times[:-1], times[1:]):
                x = x + gain * (t_next - t_cur) * model(x, t_cur)
            return x, {}
        """)
    try:
        assert load_plugin(str(good)) == f"--plugin {good}" == load_plugin(str(good))   # loaded once
        assert SOLVERS.origin("half-euler") == f"--plugin {good}"
        assert main(["--plugin", str(good), "--list"]) == 0
        listed = capsys.readouterr().out
        assert re.search(rf"half-euler +fixed     test  \[--plugin {re.escape(str(good))}\]", listed)   # names padded
        assert re.search(r"\n  euler +fixed     Euler\n", listed)         # rfbench's own: no origin shown
        assert "toy2d" in listed and "[entry point baselines]" in listed         # the baselines are a plugin too
        # a plugin's solver gets rfbench's checks: counted NFE, known options only
        flow = TangentODE()
        x0 = torch.full((3, 1), 0.3)
        assert sample(flow, x0, "half-euler", 4).nfe == 4
        torch.testing.assert_close(sample(flow, x0, "half-euler", 4).x, sample(flow, x0, "euler", 4).x)
        with pytest.raises(TypeError, match=r"half-euler got unknown option\(s\) gian; it takes: gain"):
            sample(flow, x0, "half-euler", 4, gian=2.0)
    finally:
        SOLVERS.remove("half-euler")
    broken = _write(tmp_path / "broken.py", """
        import rfbench
        x = 1
        y = undefined_name + x
        """)
    with pytest.raises(PluginError, match=rf"--plugin {broken}: importing it failed: NameError: name "
                                          rf"'undefined_name' is not defined \({broken}:4\)"):
        load_plugin(str(broken))
    taken = _write(tmp_path / "taken.py", """
        import rfbench

        @rfbench.register_solver("my-first", "adaptive")
        def mine(model, x, *, callback=None):
            return x, {}

        @rfbench.register_solver("euler", "fixed", expected_nfe=lambda n: n)
        def euler(model, x, *, times, callback=None):
            return x, {}
        """)
    with pytest.raises(SystemExit) as exc:
        main(["--plugin", str(taken), "--list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"benchmark.py: error: --plugin {taken}: solver 'euler' is already registered (by rfbench); "
                   f"choose another name"]
    assert "my-first" not in SOLVERS                          # what it registered before failing is gone


def test_a_solver_is_checked_when_registered_and_when_it_runs():
    with pytest.raises(ValueError, match="a fixed-grid solver must declare expected_nfe"):
        rfbench.register_solver("x1", "fixed")
    with pytest.raises(ValueError, match="kind must be one of fixed, adaptive, discrete, got 'fixd'"):
        rfbench.register_solver("x2", "fixd", expected_nfe=lambda n: n)
    with pytest.raises(TypeError, match=r"solver x3: the function must be fn\(model, x, \*, times, callback=None, "
                                        r"\*\*options\); it lacks callback"):
        rfbench.register_solver("x3", "fixed", expected_nfe=lambda n: n)(lambda model, x, *, times: (x, {}))
    for kind, grid in (("fixed", "karas"), ("fixed", "trailing"), ("discrete", "logsnr")):
        with pytest.raises(ValueError, match=f"solver x4: default_grid '{grid}' does not fit a {kind} solver"):
            rfbench.register_solver("x4", kind, expected_nfe=lambda n: n, default_grid=grid)(
                lambda model, x, *, times=None, timesteps=None, callback=None: (x, {}))
    assert not {"x1", "x2", "x3", "x4"} & set(SOLVERS)

    @rfbench.register_solver("miscount", "fixed", expected_nfe=lambda n: n)
    def miscount(model, x, *, times, callback=None):      # one evaluation more than it declares
        for _ in range(len(times)):
            model(x, 0.0)
        return x, {}
    try:
        with pytest.raises(rfbench.SamplerError, match=r"solver miscount \(registered by tests.test_plugins; "
                                                       r"defined at .*test_plugins.py:\d+\) counted 3 model "
                                                       r"evaluations at steps=2, but its expected_nfe\(2\) "
                                                       r"declares 2: it uses more evaluations than it declares"):
            sample(TangentODE(), torch.zeros(2, 1), "miscount", 2)
    finally:
        SOLVERS.remove("miscount")


def test_a_solver_declares_the_model_kinds_it_takes(tmp_path, capsys):
    """A flow-only plugin solver that --solvers adds is run on the flows, not on the diffusion model (said once);
    rfbench.sample and a suite's own cells refuse it on a diffusion model; the declaration is checked."""
    plugin = _write(tmp_path / "flow_only.py", """
        import rfbench

        @rfbench.register_solver("flow-only", "fixed", expected_nfe=lambda n: n, models=("flow",))
        def flow_only(model, x, *, times, callback=None):
            for t_cur, t_next in zip(times[:-1], times[1:]):
                x = x + (t_next - t_cur) * model(x, t_cur)
            return x, {}
        """)
    diffusion = GaussianEpsNet(torch.tensor([1.0, -1.0]), 0.5).model
    suite = standin("toy2d", "toy2d-kinds", {"shift": Shift(), "ddpm": (diffusion, "diffusion")},
                    cells=(Cell("shift", "euler", 2), Cell("ddpm", "ddim", 4), Cell("ddpm", "euler", 2)),
                    num_samples=100, metrics=("transport_cost",), quality_metric="transport_cost",
                    independent_row=False, straightness_samples=10)
    argv = ["--plugin", str(plugin), "--suite", "toy2d-kinds", "--solvers", "flow-only", "euler", "--out",
            str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--no-plots", "--device", "cpu"]
    note = (f"note: --solvers flow-only: flow-only takes flow models (register_solver(models=...) in --plugin "
            f"{plugin}); not run on ddpm (diffusion)")
    try:
        with registered(suite):
            assert main(argv + ["--dry-run"]) == 0
            shown = capsys.readouterr()
            assert "shift/flow-only/2" in shown.out and "ddpm/flow-only" not in shown.out
            assert (shown.out + shown.err).count(note) == 1
            assert main(argv) == 0
            shown = capsys.readouterr()
            assert (shown.out + shown.err).count(note) == 1
            frame = pd.read_csv(tmp_path / "out" / "results.csv")
            assert sorted(zip(frame["model"], frame["solver"])) == [("ddpm", "euler"), ("shift", "euler"),
                                                                    ("shift", "flow-only")]
            assert (frame["status"] == "ok").all()
            with pytest.raises(SystemExit):      # the diffusion model alone: nothing to run, and why
                main(["--suite", "toy2d-kinds", "--models", "ddpm", "--solvers", "flow-only", "--dry-run"])
            assert "nothing to run (--solvers flow-only: flow-only takes flow models" in capsys.readouterr().err
            with pytest.raises(ValueError, match=r"suite toy2d-kinds: cell ddpm/flow-only/2: flow-only takes flow "
                                                 r"models \(register_solver\(models=\.\.\.\) in --plugin "
                                                 r".*flow_only.py\); ddpm is a diffusion model"):
                dataclasses.replace(suite, cells=(Cell("ddpm", "flow-only", 2),))
        x0 = torch.zeros(3, 2)
        assert sample(Shift(), x0, "flow-only", 2).nfe == 2
        with pytest.raises(TypeError, match=r"flow-only takes flow models \(register_solver\(models=\.\.\.\) in "
                                            r"--plugin .*flow_only.py\); got a diffusion model \(DiffusionModel\)"):
            sample(diffusion, x0, "flow-only", 2)
    finally:
        SOLVERS.remove("flow-only")
    assert SOLVERS["euler"].models == ("flow", "one-step", "diffusion") and SOLVERS["ddim"].models == ("diffusion",)
    for kind, models, allowed in (("fixed", ("flw",), "flow, one-step, diffusion"), ("fixed", (), "flow, one-step, "
                                  "diffusion"), ("discrete", ("flow",), "diffusion")):
        with pytest.raises(ValueError, match=rf"solver x5: models must be a tuple of model kinds, some of {allowed} "
                                             rf"\(what a {kind} solver samples\), got"):
            rfbench.register_solver("x5", kind, expected_nfe=lambda n: n, models=models)
    assert "x5" not in SOLVERS


def test_installed_plugins_enter_through_the_entry_point_group(tmp_path):
    """A package installed with an entry point in the group rfbench.plugins is loaded without being named."""
    site = tmp_path / "site"
    (site / "fake_rfbench_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "fake_rfbench_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-rfbench-plugin\nVersion: 0.1\n")
    (site / "fake_rfbench_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[rfbench.plugins]\nfake = fake_rfbench_plugin:register\n")
    _write(site / "fake_rfbench_plugin.py", """
        import rfbench

        def register():
            @rfbench.register_solver("fake-euler", "fixed", expected_nfe=lambda n: n, description="installed")
            def fake(model, x, *, times, callback=None):
                return x, {}
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = subprocess.run([sys.executable, "benchmark.py", "--list"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"fake-euler +fixed     installed  \[entry point fake\]", out.stdout)


def test_models_from_files_and_factories_join_a_suite_with_what_they_are(tmp_path):
    scripted = torch.jit.script(Shift())
    torch.jit.save(scripted, tmp_path / "shift.ts")
    net = build_network(MLPConfig(dim=2, hidden=16, depth=1))
    save_checkpoint(tmp_path / "mlp.pt", net, {"family": "rectified_flow", "model": "mlp",
                                               "net": network_spec(MLPConfig(dim=2, hidden=16, depth=1))})
    argv = ["--suite", "toy2d", "--models", "ts", "ckpt", "fac", "--model", f"ts={tmp_path / 'shift.ts'}",
            "--model", f"ckpt={tmp_path / 'mlp.pt'}", "--model", "fac=tests.test_plugins:shift_factory",
            "--solvers", "euler", "--steps", "1", "2", "--num-samples", "200", "--out", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots", "--device", "cpu"]
    assert main(argv) == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv").set_index("model")
    rows = frame.drop(index="independent")
    assert sorted(rows.index.unique()) == ["ckpt", "fac", "ts"] and sorted(set(rows["steps"])) == [1, 2]
    assert rows.loc["ts", "model_source"].tolist() == ["TorchScript file"] * 2
    assert rows.loc["ckpt", "model_source"].iloc[0] == "rfbench checkpoint"
    assert rows.loc["fac", "model_source"].iloc[0] == "factory"
    assert rows.loc["fac", "model_checkpoint"].iloc[0] == "tests.test_plugins:shift_factory"
    assert rows.loc["ts", "model_id"].iloc[0].startswith("sha1:") and (rows["model_kind"] == "flow").all()
    assert rows.loc["ts", "model_checkpoint"].iloc[0].startswith("shift.ts (sha1 ")
    # the scripted and the factory's model are the same constant flow: the same numbers
    for col in ("w2", "transport_cost", "crossing_prob"):
        assert rows.loc["ts", col].tolist() == rows.loc["fac", col].tolist()
    assert rows.loc["ts", "transport_cost"].iloc[0] == pytest.approx(0.5, rel=1e-5)


def test_a_model_that_does_not_fit_the_suite_is_refused_before_any_work(tmp_path, capsys):
    net = build_network(MLPConfig(dim=3, hidden=8, depth=1))
    save_checkpoint(tmp_path / "3d.pt", net, {"family": "rectified_flow", "model": "m",
                                              "net": network_spec(MLPConfig(dim=3, hidden=8, depth=1))})

    class Fails(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return x @ torch.ones(5, 5)
    torch.jit.save(torch.jit.script(Fails()), tmp_path / "fails.ts")
    with pytest.raises(SystemExit) as exc:
        main(["--suite", "toy2d", "--models", "a", "b", "--model", f"a={tmp_path / '3d.pt'}", "--model",
              f"b={tmp_path / 'fails.ts'}", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"benchmark.py: error: model a (flow, from {tmp_path / '3d.pt'}) takes inputs of shape (B, 3); "
                      f"suite toy2d's samples have shape (B, 2)")
    assert err[1].startswith(f"benchmark.py: error: model b (flow, from {tmp_path / 'fails.ts'}) fails on a batch of "
                             f"suite toy2d's shape (2, 2): RuntimeError")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_run_returns_the_frame_and_keeps_nothing_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ours, theirs = CountingShift(), CountingShift()
    suite = standin("toy2d", "toy2d-api", {"shift": ours}, cells=(Cell("shift", "euler", 1), Cell("shift", "heun", 2)),
                    num_samples=100)
    with registered(suite):
        frame = rfbench.run("toy2d-api", device="cpu", cache=tmp_path / "cache")
        assert list(frame["model"]) == ["independent", "shift", "shift"] and (frame["status"] == "ok").all()
        assert frame["git_commit"].notna().all() and frame.attrs["files"] == []
        assert sorted(p.name for p in tmp_path.iterdir()) == []      # nothing on disk (the cache is never used)
        # a model object beside the suite's, with a solver and steps the suite does not sweep
        both = rfbench.run("toy2d-api", models={"shift": None, "object": theirs}, solvers=["rk4"], steps=[1, 3],
                           device="cpu", out=tmp_path / "out", plots=False)
        steps = [None if pd.isna(n) else int(n) for n in both["steps"]]
        assert list(zip(both["model"], both["solver"], steps)) == [
            ("independent", "none", None), ("shift", "rk4", 1), ("shift", "rk4", 3), ("object", "rk4", 1),
            ("object", "rk4", 3)]
        assert (both.loc[both["model"] == "object", "model_source"] == "python object").all()
        ours.calls = theirs.calls = 0
        rfbench.run("toy2d-api", models={"shift": None, "object": theirs}, solvers=["rk4"], steps=[1, 3],
                    device="cpu", out=tmp_path / "out", plots=False)
        assert ours.calls == 0 and theirs.calls > 0   # resume: the suite's model is kept, an object is recomputed
        # the gate, as in the CLI: passing, then failing with the frame carried by the exception
        frame = rfbench.run("toy2d-api", device="cpu", check=tmp_path / "out" / "results.csv",
                            fail_on=["w2:+0"], models=["shift"], solvers=["rk4"], steps=[1, 3])
        assert frame.attrs["gate"]["failures"] == [] and frame.attrs["gate"]["checked"] == 3   # the independent row too
        baseline = pd.read_csv(tmp_path / "out" / "results.csv")
        baseline.loc[baseline["model"] == "shift", "w2"] -= 0.01
        baseline.to_csv(tmp_path / "better.csv", index=False)
        with pytest.raises(rfbench.GateFailed, match=r"gate: 2 of 3 comparisons worse") as failed:
            rfbench.run("toy2d-api", device="cpu", check=tmp_path / "better.csv", fail_on=["w2:+0"],
                        models=["shift"], solvers=["rk4"], steps=[1, 3])
        assert len(failed.value.frame) == 3 and "shift/rk4/1 w2: baseline" in failed.value.failures[0]
        with pytest.raises(TypeError, match="models must be a list of names or a mapping"):
            rfbench.run("toy2d-api", models="shift")
        with pytest.raises(TypeError, match="a model must be callable as model"):
            rfbench.run("toy2d-api", models={"none": 3})


def test_the_gate_refuses_a_changed_recipe(tmp_path):
    """A model's identity (its recipe's hash, its file's sha1) is part of the gate's identity."""
    from rfbench.results.gate import GateMismatch, check_models
    baseline = pd.DataFrame([{"model": "1-rf", "model_id": "recipe:aaaaaaaaaaaa"}, {"model": "independent"}])
    check_models({"1-rf": {"model_id": "recipe:aaaaaaaaaaaa"}}, baseline)
    with pytest.raises(GateMismatch, match=r"model 1-rf model_id: baseline 'recipe:aaaaaaaaaaaa', run "
                                           r"'recipe:bbbbbbbbbbbb'\); a changed model \(its recipe, file or "
                                           r"weights\) needs a new baseline"):
        check_models({"1-rf": {"model_id": "recipe:bbbbbbbbbbbb"}}, baseline)
    recorded = pd.read_csv(ROOT / "results" / "toy2d.csv")
    ids = recorded.dropna(subset=["model_id"]).groupby("model")["model_id"].first().to_dict()
    expected = {m.name: m.source.identity(SUITES["toy2d"]).id for m in SUITES["toy2d"].models}
    assert ids == expected        # the recorded baseline is of today's recipes


def test_samples_saved_by_a_run_score_to_the_same_numbers(tmp_path, capsys):
    """--save-samples writes each cell's samples; rfbench score reads them back as a row scored exactly as the
    cell was (here the coupling metrics too: the file holds z0)."""
    suite = standin("toy2d", "toy2d-score", {"shift": Shift()}, cells=(Cell("shift", "heun", 2),), num_samples=300)
    with registered(suite):
        assert main(["--suite", "toy2d-score", "--save-samples", "--out", str(tmp_path / "run"), "--cache",
                     str(tmp_path / "cache"), "--quiet", "--no-plots", "--device", "cpu"]) == 0
        saved = list((tmp_path / "run" / "cells").glob("*.npz"))
        assert len(saved) == 1
        with np.load(saved[0]) as data:
            assert data["arr_0"].shape == (300, 2) and list(data["seeds"]) == list(range(300))
        assert main(["score", str(saved[0]), "--suite", "toy2d-score", "--label", "again", "--nfe", "4",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
        frame = pd.read_csv(tmp_path / "run" / "results.csv").set_index("model")
        assert list(frame.index) == ["independent", "shift", "again"]
        for col in ("w2", "w2_se", "crossing_prob", "crossing_prob_se", "transport_cost", "transport_cost_se"):
            assert frame.loc["again", col] == frame.loc["shift", col], col
        assert frame.loc["again", "nfe"] == 4 and frame.loc["again", "seeds"] == "0-299"
        assert frame.loc["again", "model_source"] == "samples file (float samples (300, 2))"
        # a rerun of the suite into the folder keeps the scored row in its table
        assert main(["--suite", "toy2d-score", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
                     "--quiet", "--no-plots", "--device", "cpu"]) == 0
        assert list(pd.read_csv(tmp_path / "run" / "results.csv")["model"]) == ["independent", "shift", "again"]
        # without z0 (nor seeds) the coupling metrics are empty, and the notes say why; the row replaces the earlier
        with np.load(saved[0]) as data:
            np.savez(tmp_path / "bare.npz", samples=data["arr_0"])
        assert main(["score", str(tmp_path / "bare.npz"), "--suite", "toy2d-score", "--label", "again",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
        frame = pd.read_csv(tmp_path / "run" / "results.csv").set_index("model")
        assert list(frame.index) == ["independent", "shift", "again"]
        assert frame.loc["again", "w2"] == frame.loc["shift", "w2"] and pd.isna(frame.loc["again", "transport_cost"])
        assert "the file has no z0 or seeds" in frame.loc["again", "notes"]
        # images in [0, 1] would score a wrong FID: refused, as is an array of neither layout
        for name, array, message in (
                ("unit.npz", np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32),
                 "as images in [0, 1] would: write them as uint8, or as 2x - 1"),
                ("odd.npz", np.zeros((4, 8, 8, 5), dtype=np.uint8), "have neither 1 or 3 channels last (NHWC) nor")):
            np.savez(tmp_path / name, arr_0=array)
            with pytest.raises(SystemExit):
                main(["score", str(tmp_path / name), "--suite", "digits", "--label", "x", "--out", str(tmp_path / "d")])
            assert message in capsys.readouterr().err
        np.savez(tmp_path / "3d.npz", arr_0=np.zeros((10, 3), dtype=np.float32))
        with pytest.raises(SystemExit):
            main(["score", str(tmp_path / "3d.npz"), "--suite", "toy2d-score", "--label", "x", "--out",
                  str(tmp_path / "run")])
        assert "samples of shape (N, 3) (float samples (10, 3)); the suite's samples have shape (N, 2)" in \
            capsys.readouterr().err
        with pytest.raises(SystemExit):
            main(["score", str(tmp_path / "bare.npz"), "--suite", "toy2d", "--label", "x", "--out",
                  str(tmp_path / "run")])
        version = SUITES["toy2d"].version
        assert f"holds results of toy2d-score v{version}, not toy2d v{version}; score into another folder" in \
            capsys.readouterr().err


def test_a_scored_row_never_stands_in_a_runs_cell(tmp_path, capsys):
    """rfbench score refuses a label that names a model whose cells a run wrote into --out (it used to replace the
    run's own 1-rf/euler/1 row, unmarked), and a run refuses a folder holding a row scored under one of its models'
    names; labels follow the model names' rule (a line break split the Markdown table)."""
    suite = standin("toy2d", "toy2d-label", {"shift": Shift()}, cells=(Cell("shift", "euler", 1),), num_samples=50)
    np.savez(tmp_path / "other.npz", arr_0=np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    run_args = ["--suite", "toy2d-label", "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots", "--device",
                "cpu"]

    def errors() -> list[str]:       # what follows "PROG: error: " on each error line
        return [line.split(" error: ", 1)[1] for line in capsys.readouterr().err.splitlines() if " error: " in line]

    def score(label: str, out: Path) -> int:
        return main(["score", str(tmp_path / "other.npz"), "--suite", "toy2d-label", "--label", label, "--solver",
                     "euler", "--steps", "1", "--out", str(out), "--quiet"])

    with registered(suite):
        run = tmp_path / "run"
        assert main(run_args + ["--out", str(run)]) == 0
        table, cells = (run / "results.csv").read_bytes(), sorted((run / "cells").iterdir())
        with pytest.raises(SystemExit) as exc:
            score("shift", run)
        assert exc.value.code == 2
        (line,) = errors()
        assert line.startswith(f"--label shift: --out {run} holds a run's cells of its model "
                               f"shift (cells/") and line.endswith("pick another label (e.g. shift-external)")
        assert (run / "results.csv").read_bytes() == table and sorted((run / "cells").iterdir()) == cells
        for label in ("shift\nx", "a|b", " shift", "independent", "a/b", ""):
            with pytest.raises(SystemExit):
                score(label, run)
            assert "--label (the row's model) must be a non-empty string of printable characters" in \
                capsys.readouterr().err
        assert (run / "results.csv").read_bytes() == table
        assert score("shift-external", run) == 0        # another label joins the table beside the run's row
        frame = pd.read_csv(run / "results.csv")
        assert list(frame["model"]) == ["independent", "shift", "shift-external"]
        assert frame.set_index("model").loc["shift", "model_source"] == "factory"
        # the run's row only in results.csv (its cell files gone): still refused
        for path in (run / "cells").glob("*.json"):
            path.unlink()
        with pytest.raises(SystemExit):
            score("shift", run)
        assert "holds a run's cells of its model shift (results.csv)" in capsys.readouterr().err
        # the other order: a scored row first, then a run with a model of that name into the same folder
        other = tmp_path / "other"
        assert score("shift", other) == 0
        scored = (other / "results.csv").read_bytes()
        with pytest.raises(SystemExit) as exc:
            main(run_args + ["--out", str(other)])
        assert exc.value.code == 2
        (key,) = [p.name for p in (other / "cells").glob("*.json")]
        assert errors() == [(
            f"--out {other} holds a row that rfbench score added under the label shift (cells/{key}), "
            f"the name of a model of this run: give the run another --out, or move that file out of cells/ and score "
            f"the samples again under another label")]
        assert (other / "results.csv").read_bytes() == scored
    with pytest.raises(ValueError, match=r"a model name must be a non-empty string of printable characters.*got "
                                         r"'two\\nlines'"):
        standin("toy2d", "toy2d-bad-name", {"two\nlines": Shift()}, cells=())


def test_image_samples_from_a_file_score_as_the_suite_scores_real_images(tmp_path):
    """Held-out digits written as a clean-fid / ADM sample file (uint8 NHWC) score the FID of the digits suite's
    independent row, which holds the same images."""
    from rfbench.data.base import quantize
    from rfbench.suites.plan import RunConfig
    from rfbench.suites.score import score_samples
    suite = standin("digits", "digits-score", {"shift": Shift()}, cells=(Cell("shift", "euler", 1),), num_samples=360,
                    bootstrap=0)
    images = suite.problem.independent_target(range(360))
    np.savez(tmp_path / "held_out.npz", arr_0=quantize(images).permute(0, 2, 3, 1).numpy())
    with registered(suite):
        row, _ = score_samples(tmp_path / "held_out.npz", "digits-score", "held-out", RunConfig(
            cache_dir=str(tmp_path / "cache"), device="cpu"), out=tmp_path / "run", log=lambda msg: None)
        assert row["model_source"] == "samples file (uint8 NHWC images (360, 8, 8, 1))" and row["n_samples"] == 360
        from rfbench.suites.evaluate import Evaluation, image_eval
        from rfbench.suites.plan import make_plan
        plan = make_plan(suite, RunConfig(cache_dir=str(tmp_path / "cache")))
        evaluation = Evaluation(plan, plan.problem.reference(), image_eval(
            plan, tmp_path / "cache", torch.device("cpu"), None, lambda msg: None))
        independent = evaluation.independent_record(suite.problem.initial(range(360)), list(range(360)), None)
        assert row["fid"] == pytest.approx(independent["fid"], rel=1e-12)
        assert row["precision"] == independent["precision"] and row["recall"] == independent["recall"]
    assert json.loads(next((tmp_path / "run" / "cells").glob("*.json")).read_text())["model"] == "held-out"


class PixelFeatures(rfbench.FeatureExtractor):
    """An extractor that needs no training: an 8x8 image's 64 pixels are its features."""

    name, dim, num_classes, resize_mode, resolution, checkpoint = "pixels", 64, None, "none", 8, "none"
    logits_note = "pixels have no classifier"

    def extract(self, images):
        return images.reshape(len(images), -1).double(), None


@pytest.fixture
def pixel_extractor():
    """The extractor ``pixels`` registered (through the public door) for the test."""
    from rfbench.metrics.features import EXTRACTORS
    rfbench.register_extractor("pixels", lambda *args, **kwargs: PixelFeatures())
    yield "pixels"
    EXTRACTORS.remove("pixels")


def test_score_refuses_numpy_files_of_python_objects_naming_the_file_and_the_array(tmp_path, capsys, pixel_extractor):
    """Every numpy file `rfbench score` reads (the samples, --ref-stats, the cached reference) is read without
    unpickling; an array of Python objects is one line naming the file and the array, exit status 2."""
    from rfbench.data.base import quantize
    suite = standin("digits", "digits-objects", {"shift": Shift()}, cells=(Cell("shift", "euler", 1),),
                    num_samples=40, bootstrap=0, extractor=pixel_extractor)
    images = quantize(suite.problem.independent_target(range(40))).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "good.npz", arr_0=images)
    objects = np.array([{"any": "object"}] * 40, dtype=object)
    np.savez(tmp_path / "samples.npz", arr_0=objects)
    np.savez(tmp_path / "z0.npz", arr_0=images, z0=objects)
    np.save(tmp_path / "samples.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "ref.npz", mu=np.zeros(64), sigma=np.array([np.eye(64)], dtype=object))
    cache = tmp_path / "cache"

    def score(samples, *extra):
        with pytest.raises(SystemExit) as exit_:
            main(["score", str(tmp_path / samples), "--suite", "digits-objects", "--label", "x", "--out",
                  str(tmp_path / "run"), "--cache", str(cache), "--device", "cpu", "--quiet", *extra])
        errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
        assert exit_.value.code == 2 and len(errors) == 1, errors
        return errors[0]

    with registered(suite):
        for samples, array in (("samples.npz", "array 'arr_0'"), ("z0.npz", "array 'z0'"),
                               ("samples.npy", "the array")):
            assert f"{tmp_path / samples}: {array} holds Python objects (dtype object), which only unpickling " \
                   f"reads" in score(samples)
        error = score("good.npz", "--ref-stats", str(tmp_path / "ref.npz"))
        assert f"--ref-stats {tmp_path / 'ref.npz'}: array 'sigma' holds Python objects" in error
        assert error.endswith("rfbench reads numpy files of plain arrays only (numbers, bool, strings)")
        # the reference the first scoring caches, its features (.npy) then its statistics (.npz) replaced
        assert main(["score", str(tmp_path / "good.npz"), "--suite", "digits-objects", "--label", "x", "--out",
                     str(tmp_path / "run"), "--cache", str(cache), "--device", "cpu", "--quiet"]) == 0
        features = next((cache / "reference").glob("*.features.npy"))
        plain = np.load(features)
        np.save(features, plain.astype(object), allow_pickle=True)
        assert f"{features}: the array holds Python objects" in score("good.npz")
        np.save(features, plain)
        stats = next((cache / "reference").glob("*[0-9a-f].npz"))
        with np.load(stats) as data:
            np.savez(stats, **{**data, "n": np.array([40], dtype=object)})
        assert f"{stats}: array 'n' holds Python objects" in score("good.npz")


class IntegerTimesteps(torch.nn.Module):
    """An eps network that, like many DDPM codebases', embeds integer timesteps only (a float one is an error)."""

    input_shape = (2,)

    def forward(self, x, timesteps):
        if timesteps.dtype != torch.long:
            raise TypeError("integer timesteps only")
        return torch.zeros_like(x)


def integer_ddpm(device):
    from rfbench.models import DiffusionModel, linear_betas
    return DiffusionModel(IntegerTimesteps(), linear_betas(100))


def test_a_diffusion_model_for_discrete_samplers_is_not_refused_by_the_shape_check(tmp_path):
    assert main(["--suite", "toy2d", "--models", "int", "--model", "int:diffusion=tests.test_plugins:integer_ddpm",
                 "--solvers", "ddim", "--steps", "2", "--num-samples", "50", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots", "--device", "cpu"]) == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(frame["model"]) == ["independent", "int"] and frame["status"].eq("ok").all()


FACTORY_MODULE = """
import torch


class Constant(torch.nn.Module):
    input_shape = (2,)

    def forward(self, x, t):
        return torch.full_like(x, 0.5)


def make():
    return Constant()
"""


def test_a_factory_module_is_found_in_the_current_folder_and_one_that_cannot_be_imported_is_named(
        tmp_path, monkeypatch, capsys):
    """--model NAME=module:factory imports the module from the current folder, as --plugin finds a file there; a
    module that cannot be imported is said as such (which, and why), not as a problem with the suite's shape."""
    (tmp_path / "flow_beside_me.py").write_text(FACTORY_MODULE)
    (tmp_path / "flow_needing_more.py").write_text("import a_dependency_nobody_installed\n" + FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)
    common = ["--suite", "toy2d", "--models", "mine", "--solvers", "euler", "--steps", "1", "--num-samples", "50",
              "--cache", str(tmp_path / "cache"), "--quiet", "--no-plots", "--device", "cpu"]
    try:
        assert main(common + ["--model", "mine=flow_beside_me:make", "--out", str(tmp_path / "out")]) == 0
    finally:
        sys.modules.pop("flow_beside_me", None)
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(frame["model"]) == ["independent", "mine"] and frame["status"].eq("ok").all()
    assert frame["model_id"].iloc[1].startswith("factory:flow_beside_me:make@sha1:")
    assert "sha1:unknown" not in frame["model_id"].iloc[1]      # its module's file was found to identify it
    capsys.readouterr()
    for factory, why in (("flow_needing_more:make", "ModuleNotFoundError: No module named "
                                                    "'a_dependency_nobody_installed'"),
                         ("flow_nowhere:make", f"no module named 'flow_nowhere' on the Python path nor in the current "
                                               f"folder {tmp_path}")):
        with pytest.raises(SystemExit) as exit_status:
            main(common + ["--model", f"mine={factory}", "--out", str(tmp_path / "other")])
        err = capsys.readouterr().err
        module = factory.partition(":")[0]
        assert exit_status.value.code == 2
        assert f"error: model mine (flow, from the factory {factory}): cannot import module {module}: {why}\n" in err
        assert "shape" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_a_plan_narrows_and_widens_a_suite(tmp_path):
    from rfbench.models.sources import ModelFile
    from rfbench.suites import RunConfig, make_plan
    suite = SUITES["toy2d"]

    def labels(**config):
        return [c.label for c in make_plan(suite, RunConfig(**config)).cells]

    # a solver the suite does not sweep joins every model it applies to, at the steps that model uses
    added = labels(solvers=("rk4",))
    assert [c for c in added if c.startswith("1-rf/")] == [f"1-rf/rk4/{n}" for n in (1, 2, 4, 8, 16, 32)]
    assert [c for c in added if c.startswith("ddpm/")] == [f"ddpm/rk4/{n}" for n in (2, 4, 8, 16)]   # dpm++'s
    assert not [c for c in added if c.startswith("2-rf-distill/")]          # a one-step model takes no ODE solver
    # a solver the suite sweeps narrows; models keep the suite's order; steps replace the step counts
    assert labels(models=("2-rf-distill", "1-rf"), solvers=("euler", "rk45"), steps=(2,)) == [
        "1-rf/euler/2", "1-rf/rk45/adaptive", "2-rf-distill/euler/1"]
    # a suite model given a file stays subject to --models; given as another kind, it takes that kind's cells
    path = tmp_path / "m.pt"
    assert labels(models=("2-rf",), add_models=(("1-rf", ModelFile(path)),), solvers=("euler",), steps=(1,)) == [
        "2-rf/euler/1"]
    assert labels(models=("1-rf",), add_models=(("1-rf", ModelFile(path, kind="one-step")),)) == ["1-rf/euler/1"]
    with pytest.raises(TypeError, match=r"--solvers \(solvers=\) must be a list of names, got 'euler'"):
        rfbench.run("toy2d", solvers="euler")
    with pytest.raises(ValueError, match=r"--solvers eulr: Unknown solver 'eulr'. Did you mean: euler"):
        make_plan(suite, RunConfig(solvers=("eulr",)))
    with pytest.raises(ValueError, match=r"--steps \(steps=\) must be integers >= 1, got \[0\]"):
        RunConfig(steps=(0,))


def test_a_plugin_registers_a_time_grid_that_every_fixed_grid_solver_takes(tmp_path, capsys):
    from rfbench.samplers import GRIDS
    plugin = _write(tmp_path / "cosine_grid.py", """
        import math
        import rfbench

        @rfbench.register_grid("cosine", "t = (1 - cos(pi i / N)) / 2")
        def cosine(steps, path, power: float = 1.0):
            return [((1 - math.cos(math.pi * i / steps)) / 2) ** power for i in range(steps + 1)]
        """)
    try:
        assert main(["--plugin", str(plugin), "--list"]) == 0
        assert f"cosine(power)  [--plugin {plugin}]" in capsys.readouterr().out
        flow = TangentODE()
        x0 = torch.full((2, 1), 0.1, dtype=torch.float64)
        expected = [(1 - np.cos(np.pi * i / 4)) / 2 for i in range(5)]
        torch.testing.assert_close(sample(flow, x0, "euler", 4, grid="cosine").x,
                                   sample(flow, x0, "euler", grid=expected).x, rtol=0, atol=0)
        frame = rfbench.run("toy2d", models={"shift": Shift()}, solvers=["heun"], steps=[2], grids=["cosine:power=2"],
                            num_samples=50, device="cpu")
        assert list(frame["grid"].dropna()) == ["cosine:power=2"] and frame["status"].eq("ok").all()
    finally:
        GRIDS.remove("cosine")

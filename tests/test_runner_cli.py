"""The sweep runner and the command line, with stand-in baselines that need no training."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from rfbench.cli import main
from rfbench.results import ResultStore
from rfbench.suites import SUITES, Cell
from rfbench.suites.runner import run_suite
from tests.standins import registered, standin

REQUIRED_COLUMNS = ("suite", "model", "solver", "steps", "nfe", "n_samples", "seed", "wall_clock_s",
                    "samples_per_s", "crossing_prob", "transport_cost", "straightness", "w2", "device",
                    "torch_version", "git_commit")


class ShiftFlow:
    """A constant velocity: moves every point by the mean of the target (a crude but finite model)."""

    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, 0.5)


class NaNFlow:
    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, float("nan"))


def broken():
    raise FileNotFoundError("weights file /nowhere/model.pt not found")


@pytest.fixture
def stand_in_suite():
    suite = standin("toy2d", "toy2d-standin", {"shift": ShiftFlow(), "nan": NaNFlow(), "broken": broken},
                    cells=(Cell("shift", "euler", 2), Cell("shift", "rk45"), Cell("nan", "euler", 4),
                           Cell("nan", "rk45"), Cell("shift", "heun", 3), Cell("broken", "euler", 1)),
                    num_samples=300)
    with registered(suite):
        yield suite


def test_a_sweep_records_failures_and_goes_on(stand_in_suite, tmp_path):
    out = run_suite(stand_in_suite, tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                    log=lambda msg: None)
    frame = out.frame
    assert list(frame["model"]) == ["independent", "shift", "shift", "shift", "nan", "nan", "broken"]  # by model
    for col in REQUIRED_COLUMNS:
        assert col in frame.columns, col
    ok = frame[frame["status"] == "ok"]
    assert set(ok["model"]) == {"independent", "shift"}
    nan_rows = frame[frame["model"] == "nan"]
    assert (nan_rows["status"] == "failed").all()
    assert nan_rows["error"].str.contains("NonFiniteError").all()
    assert nan_rows["w2"].isna().all()                     # no number for a failed cell
    broken = frame[frame["model"] == "broken"].iloc[0]
    assert broken["status"] == "failed" and "/nowhere/model.pt" in broken["error"]
    shift = frame[(frame["model"] == "shift") & (frame["solver"] == "euler")].iloc[0]
    assert shift["nfe"] == 2 and shift["n_samples"] == 300 and shift["seed"] == 0
    assert shift["transport_cost"] == pytest.approx(0.5, rel=1e-5)   # every point moved by (0.5, 0.5)
    assert shift["straightness"] == pytest.approx(0.0, abs=1e-10)     # a constant velocity is straight
    assert shift["model_metrics_solver"] == "rk4/100"
    assert frame.loc[frame["model"] == "independent", "nfe"].iloc[0] == 0
    # everything on disk: the CSV, the Markdown table, one JSON per cell
    csv = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(csv) == len(frame) == len(ResultStore(tmp_path / "run").load())
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| model" in md and "nan" in md and "failed" in md
    assert (tmp_path / "run" / "w2_vs_nfe.png").stat().st_size > 0
    assert (tmp_path / "run" / "trajectories.png").stat().st_size > 0


def test_cli_exits_non_zero_when_a_cell_failed(stand_in_suite, tmp_path, capsys):
    code = main(["--suite", "toy2d-standin", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--models", "shift", "nan", "--quiet", "--no-plots", "--num-samples", "200"])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 of 6 cell(s) failed (nan): NonFiniteError: euler (steps=4) produced non-finite samples" in err
    assert "200 samples per cell, fewer than the suite's default 300" in err
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == 6


def test_cli_list_and_dry_run(capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "toy2d" in listed and "toy2d-transfer" in listed and "rk45" in listed and "ddim" in listed
    assert main(["--suite", "toy2d", "--dry-run", "--models", "2-rf", "--solvers", "euler", "--device", "cpu"]) == 0
    cells = capsys.readouterr().out
    assert "2-rf/euler/1" in cells and "2-rf/euler/32" in cells and "heun" not in cells


@pytest.mark.parametrize("argv,message", [
    (["--suite", "toy2", "--dry-run"], "Unknown suite 'toy2'. Did you mean: toy2d"),
    (["--num-samples", "1", "--dry-run"], "--num-samples must be >= 2, got 1"),
    (["--models", "4-rf", "--dry-run"], "suite toy2d has no model '4-rf'"),
    (["--solvers", "rk23", "--dry-run"], "Unknown solver 'rk23'. Did you mean: rk4, rk45"),
    (["--models", "2-rf-distill", "--solvers", "rk45", "--dry-run"], "nothing to run"),
    (["--model", "x=/nowhere/f.pt", "--dry-run"], "'/nowhere/f.pt' is neither an existing file or folder nor "
                                                  "package.module:function"),
    (["--model", "x:nope=f.pt", "--dry-run"], "KIND must be one of flow, one-step, diffusion, vp, subvp"),
    (["--plugin", "/nowhere/plugin.py", "--dry-run"], "--plugin /nowhere/plugin.py: no such file"),
    (["--plugin", "no_such_module_xyz", "--dry-run"], "no module named 'no_such_module_xyz'"),
    (["--models", "2-rf-distill", "--steps", "4", "--dry-run"], "--steps applies to fixed-grid and discrete"),
    (["--device", "tpu7", "--dry-run"], "is not a torch device"),
    (["--inception-weights", "x.pt", "--dry-run"], "apply to suites scored with the inception extractor; suite "
                                                   "toy2d uses no extractor"),
    (["--suite", "digits", "--inception-mode", "clean", "--dry-run"], "suite digits uses digits"),
])
def test_cli_bad_arguments_exit_with_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cli_cuda_without_a_gpu(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--dry-run"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_run_naming_an_unknown_model_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="suite toy2d has no model '1-fr' and no model of that name is registered"):
        run_suite(SUITES["toy2d"], tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                  models=("1-rf", "1-fr"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="cell 1-fr/euler/1 names model '1-fr', not one of the suite's models"):
        dataclasses.replace(SUITES["toy2d"], cells=(Cell("1-fr", "euler", 1),))


class SleepyFlow:
    """A constant velocity whose evaluations of a 50-row batch sleep for given durations: the two warm-up calls, then
    one per timed run (one Euler step, one batch). The straightness trajectory (10 rows) does not sleep."""

    input_shape = (2,)

    def __init__(self, sleeps):
        self.sleeps = list(sleeps)

    def __call__(self, x, t):
        import time
        if x.shape[0] == 50:
            time.sleep(self.sleeps.pop(0) if self.sleeps else 0.0)
        return torch.full_like(x, 0.5)


def test_wall_clock_is_the_median_of_timed_runs_after_an_untimed_warm_up(tmp_path):
    flow = SleepyFlow([1.0, 1.0, 0.6, 0.0, 0.2])      # warm-up 2 x 1 s (untimed), then runs of 0.6, 0, 0.2 s
    suite = standin("toy2d", "toy2d-timing", {"sleepy": flow}, cells=(Cell("sleepy", "euler", 1),), num_samples=50,
                    metrics=("transport_cost",), quality_metric="transport_cost", independent_row=False,
                    straightness_samples=10)
    frame = run_suite(suite, tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                      plots=False, log=lambda msg: None, repeats=3).frame
    row = frame.iloc[0]
    assert 0.2 <= row["wall_clock_s"] < 0.55                 # the median run, not the first or the warm-up
    assert row["samples_per_s"] == pytest.approx(50 / row["wall_clock_s"])
    assert 200 <= row["ms_per_nfe"] < 550                    # median over (run, batch) of ms / the batch's NFE
    assert row["timing"] == "warmup=2nfe,repeats=3,processes=1"
    assert row["transport_cost"] == pytest.approx(0.5, rel=1e-5) and not flow.sleeps


def test_cli_repeats_batch_size_and_fewer_samples_are_recorded(stand_in_suite, tmp_path, capsys):
    code = main(["--suite", "toy2d-standin", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--models", "shift", "--quiet", "--no-plots", "--num-samples", "120", "--repeats", "2",
                 "--batch-size", "auto", "--device", "cpu"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    sampled = frame[frame["model"] == "shift"]
    assert sampled["timing"].str.contains("repeats=2").all() and sampled["ms_per_nfe"].notna().all()
    # every row says its sample count is below the suite's default, so it is not mistaken for a comparable one
    assert frame["notes"].str.contains("120 samples, fewer than the suite's default 300: not comparable").all()
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            main(["--suite", "toy2d-standin", "--batch-size", bad, "--dry-run"])
        assert f"--batch-size takes an integer >= 1 or auto, got '{bad}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--suite", "toy2d-standin", "--repeats", "0", "--dry-run"])
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err

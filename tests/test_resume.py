"""Resumable sweeps: a run killed with SIGKILL loses no finished cell, and the rerun computes only the missing ones;
--force recomputes; failed cells are computed again."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rfbench.results.store import ResultStore
from rfbench.suites import Cell
from rfbench.suites.runner import run_suite
from tests.standins import standin, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "tests.cli_child", "--suite", "toy-slow", "--out", str(out), "--cache", str(cache),
            "--quiet", "--no-plots", "--device", "cpu"]


def test_a_sweep_killed_with_sigkill_resumes_without_recomputing(tmp_path):
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RFBENCH_TEST_CALLS": str(calls)}
    proc = subprocess.Popen(_command(out, tmp_path / "cache"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    wait_for(proc, lambda: len(list((out / "cells").glob("*.json"))) >= 3,     # the independent row and two cells
             "the sweep did not write three cells")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert 3 <= len(before) < 9, "killed too late to test anything"
    done_steps = {json.loads(blob)["steps"] for blob in before.values()} - {None}
    calls.unlink()

    rerun = subprocess.run(_command(out, tmp_path / "cache"), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(after) == 9 and set(before) <= set(after)
    assert all(after[name] == blob for name, blob in before.items())       # finished cells untouched
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 9 and list(frame["model"]) == ["independent"] + ["slow"] * 8
    assert list(frame["steps"].iloc[1:]) == list(range(1, 9)) and (frame["status"] == "ok").all()
    # the rerun evaluated the flow for the missing cells only: 2 warm-up evaluations + n Euler steps each, on the
    # 40-row batch (the straightness trajectory runs on 4 rows)
    batch_calls = [int(line) for line in calls.read_text().split()].count(40)
    assert batch_calls == sum(2 + n for n in range(1, 9) if n not in done_steps)


def test_sigterm_stops_like_ctrl_c_says_what_is_kept_and_exits_143(tmp_path):
    """SIGTERM (what SLURM sends before it kills a job) stops the run as Ctrl-C does: the cell in hand is dropped,
    the finished ones are kept and named, the exit status is 143 (128 + 15), and a rerun resumes from them."""
    out = tmp_path / "out"
    command = _command(out, tmp_path / "cache") + ["--steps", "1", "2", "3", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(proc, lambda: len(list((out / "cells").glob("*.json"))) >= 2,     # the independent row and one cell
             "the sweep did not write two cells")
    os.kill(proc.pid, signal.SIGTERM)
    stderr = proc.communicate(timeout=60)[1].decode()
    before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert proc.returncode == 143, stderr[-3000:]
    assert 2 <= len(before) < 5, "stopped too late to test anything"
    assert f"terminated (SIGTERM); {len(before)} finished cell(s) are kept in {out / 'cells'}: rerun the same " \
           f"command to resume" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not list((out / "cells").glob(".*.tmp"))            # no half-written cell left behind

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(after) == 5 and all(after[name] == blob for name, blob in before.items())   # kept, not recomputed


def test_the_cli_puts_back_the_sigterm_handler_it_found(capsys):
    from rfbench.cli import main

    def mine(signum, frame):
        pass
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["--list"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


class Counting:
    input_shape = (2,)

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return torch.full_like(x, 0.5)


def test_force_recomputes_and_failed_cells_are_retried(tmp_path):
    flow = Counting()
    suite = standin("toy2d", "toy2d-resume", {"count": flow}, num_samples=30, metrics=("w2",), independent_row=False,
                    cells=(Cell("count", "euler", 1), Cell("count", "euler", 2)))

    def run(**kw) -> int:
        flow.calls = 0
        frame = run_suite(suite, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                          plots=False, log=lambda msg: None, **kw).frame
        assert frame["status"].tolist() == ["ok", "ok"] and frame["steps"].tolist() == [1, 2]
        return flow.calls

    full = run()          # the trajectory plot's rk4 run, then each cell: 2 warm-up evaluations + its steps
    assert full > 0
    assert run() == 0     # everything finished: nothing sampled
    assert run(resume=False) == full
    cells = {json.loads(p.read_text())["steps"]: p for p in (tmp_path / "out" / "cells").glob("*.json")}
    record = json.loads(cells[2].read_text())
    record.update(status="failed", error="NonFiniteError: injected", w2=None)
    ResultStore(tmp_path / "out").write(record, key=cells[2].stem)     # as a run writes a failed cell
    assert run() == full - (2 + 1)       # the failed cell is computed again (with the trajectory), the other kept
    assert json.loads(cells[2].read_text())["status"] == "ok"
    # another model under the same name (another recipe, file or factory: another model_id) is another cell
    record = json.loads(cells[1].read_text())
    assert record["model_id"].startswith("factory:tests.standins:") and record["model_source"] == "factory"
    other = standin("toy2d", "toy2d-resume", {"count": lambda: flow}, num_samples=30, metrics=("w2",),
                    independent_row=False, cells=(Cell("count", "euler", 1), Cell("count", "euler", 2)))
    flow.calls = 0
    frame = run_suite(other, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                      plots=False, log=lambda msg: None).frame
    assert flow.calls == full and frame["model_id"].str.startswith("factory:tests.test_resume:").all()
    (tmp_path / "out" / "cells" / "stray.json").write_text("[]")      # not a record: ignored with a warning
    with pytest.warns(UserWarning, match="stray.json: not a JSON object"):
        assert run() == 0                # the first model's cells are still there, under their own keys
    # a cell from before its metric gained a column (here w2's standard error) is computed again
    record = json.loads(cells[2].read_text())
    assert record["w2_se"] > 0
    del record["w2_se"]
    ResultStore(tmp_path / "out").write(record, key=cells[2].stem)     # as an earlier rfbench wrote it
    assert run() == full - (2 + 1)
    assert json.loads(cells[2].read_text())["w2_se"] > 0


def test_resume_keeps_the_independent_row_and_needs_the_same_replicates(tmp_path):
    flow = Counting()
    suite = standin("toy2d", "toy2d-resume-b", {"count": flow}, num_samples=30, cells=(Cell("count", "euler", 1),),
                    metrics=("w2",), bootstrap=5)
    out = tmp_path / "out"

    def run(suite) -> list[str]:
        flow.calls = 0
        before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} if out.exists() else {}
        frame = run_suite(suite, out, device="cpu", cache_dir=tmp_path / "cache", progress=False, plots=False,
                          log=lambda msg: None).frame
        assert frame["model"].tolist() == ["independent", "count"] and (frame["status"] == "ok").all()
        assert (frame["bootstrap"] == suite.bootstrap).all()
        return [p.name for p in (out / "cells").glob("*.json") if before.get(p.name) != p.stat().st_mtime_ns]

    assert len(run(suite)) == 2
    assert run(suite) == [] and flow.calls == 0           # the independent row is kept too
    assert len(run(dataclasses.replace(suite, bootstrap=0))) == 2 and flow.calls > 0   # other replicates: redone


class FailsOnSeven:
    """A flow that cannot take a batch of 7 rows while ``fail`` is set (as a network short of memory would not)."""

    input_shape = (2,)

    def __init__(self):
        self.fail, self.reference_calls = True, 0

    def __call__(self, x, t):
        if x.shape[0] == 7:
            self.reference_calls += 1
            if self.fail:
                raise RuntimeError("CUDA out of memory (a stand-in)")
        return -x * (1 + torch.as_tensor(t).reshape(-1, 1))


def test_a_failed_reference_solution_keeps_the_cells_and_is_computed_again(tmp_path):
    """solver_error's rk45 reference is made only when an ODE cell needs it; when it fails the cells keep their other
    metrics with a note saying why, and a rerun computes them again; the ddim-free stand-in has no other failure."""
    flow = FailsOnSeven()
    suite = standin("toy2d", "toy2d-resume-ref", {"ff": flow}, num_samples=30, metrics=("w2", "solver_error"),
                    independent_row=False, solver_error_samples=7, solver_error_tolerance=1e-5,
                    cells=(Cell("ff", "euler", 2), Cell("ff", "heun", 2)))

    def run():
        return run_suite(suite, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                         plots=False, log=lambda msg: None).frame

    first = run()
    assert (first["status"] == "ok").all() and first["w2"].notna().all() and first["solver_error"].isna().all()
    # the reference's first evaluation failed: the note says so and keeps the model's own error
    assert first["notes"].str.contains("solver_error: the model's reference solution .rk45, tolerance 1e-05. failed: "
                                       ".*first evaluation .velocity. failed on what rfbench passed it, x .7, 2. "
                                       ".*RuntimeError: CUDA out of memory").all()
    assert flow.reference_calls == 1                # made once for the model, not once per cell
    flow.fail, flow.reference_calls = False, 0
    second = run()
    assert (second["status"] == "ok").all() and (second["solver_error"] > 0).all()
    assert "notes" not in second or not second["notes"].fillna("").str.contains("reference solution").any()
    assert flow.reference_calls > 1                 # rk45's evaluations on the 7 rows
    flow.reference_calls = 0
    third = run()                                   # everything there: nothing sampled, no reference made
    assert flow.reference_calls == 0 and third["solver_error"].tolist() == second["solver_error"].tolist()
    # a run on a smaller batch solves the reference in batches of that size (here 3, 3 and 1 rows)
    batched = run_suite(suite, tmp_path / "b3", device="cpu", cache_dir=tmp_path / "cache", progress=False,
                        plots=False, log=lambda msg: None, batch_size=3).frame
    torch.testing.assert_close(torch.tensor(batched["solver_error"].to_numpy()),
                               torch.tensor(second["solver_error"].to_numpy()), rtol=1e-3, atol=1e-6)

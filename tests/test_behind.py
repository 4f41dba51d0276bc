"""Scoring a model's cells beside the next model's loading (rfbench.suites.behind): the rows' order and values as
when each cell is scored as it finishes, nothing scored while a cell is timed, rows already scored stored when the
sweep fails, and the queue bounded in memory."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import rfbench.suites.behind as behind_module
import rfbench.suites.runner as runner
from rfbench.suites import Cell
from rfbench.suites.behind import Behind
from tests.problems import GaussianFlow
from tests.standins import standin


def test_jobs_wait_for_start_and_follow_in_order():
    out, idents = [], []
    with Behind(enabled=False) as off:     # off: each job now, in the caller's thread
        off.add(lambda: (idents.append(threading.get_ident()), 1)[1], out.append)
        off.add(None, lambda _: out.append("kept"))
        assert out == [1, "kept"] and idents == [threading.get_ident()] and off.inline_s > 0
    out.clear()
    idents.clear()
    with Behind(enabled=True) as on:
        on.add(None, lambda _: out.append("first"))      # nothing pending: at once
        on.add(lambda: (idents.append(threading.get_ident()), 2)[1], out.append)
        on.add(None, lambda _: out.append("kept"))       # after the job before it
        on.add(lambda: 3, out.append)
        on.wait()                                        # queued, not started: nothing to wait for
        assert out == ["first"] and not idents
        on.start()
        on.add(lambda: 4, out.append)                    # queued behind the started ones
        on.wait()
        assert out == ["first", 2, "kept", 3]
    assert out == ["first", 2, "kept", 3, 4]             # the rest when the sweep ends
    assert idents and idents[0] != threading.get_ident() and on.busy_s > 0


def test_a_job_not_deferred_runs_now_after_what_is_pending():
    out, idents = [], []
    with Behind(enabled=True) as on:
        on.add(lambda: 1, out.append)
        on.add(lambda: (idents.append(threading.get_ident()), 2)[1], out.append, defer=False)   # the last model's
        assert out == [1, 2] and idents == [threading.get_ident()]


def test_a_failing_sweep_stores_what_was_scored_before_the_error_propagates():
    out = []
    with pytest.raises(RuntimeError, match="training failed"):
        with Behind(enabled=True) as on:
            on.add(lambda: 5, out.append)
            on.start()
            on.add(lambda: 6, out.append)                # queued when the error came: scored too
            raise RuntimeError("training failed")
    assert out == [5, 6]


def test_ctrl_c_lets_the_running_job_store_its_row_and_drops_the_rest():
    out = []
    with pytest.raises(KeyboardInterrupt):
        with Behind(enabled=True) as on:
            on.add(lambda: (time.sleep(0.5), 1)[1], out.append)
            on.add(lambda: 2, out.append)
            on.start()
            on.add(lambda: 3, out.append)                # queued, never started
            raise KeyboardInterrupt
    assert out == [1]


def test_the_worker_scores_on_one_thread_without_a_worker_of_its_own():
    from rfbench.suites.behind import in_worker

    seen = []
    with Behind(enabled=True) as on:
        on.add(lambda: (in_worker(), torch.get_num_threads()), seen.append)
    assert seen == [(True, 1)] and not in_worker()


def test_the_queue_is_scored_at_once_past_its_memory_bound(monkeypatch):
    monkeypatch.setattr(behind_module, "PENDING_BYTES", 100)
    out = []
    with Behind(enabled=True) as on:
        on.add(lambda: 1, out.append, size=60)
        assert out == []
        on.add(lambda: 2, out.append, size=60)
        assert out == [1, 2]


def test_a_sweep_scores_beside_the_next_load_never_beside_a_timed_cell(tmp_path, monkeypatch):
    events = []      # (what, thread, start, end)

    def recorded(what, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                events.append((what, threading.get_ident(), start, time.perf_counter()))
        return wrapper

    def slow_load():      # stands in for training the second model: 1 s with the first model's cells to score
        start = time.perf_counter()
        time.sleep(1.0)
        events.append(("load", threading.get_ident(), start, time.perf_counter()))
        return GaussianFlow(torch.tensor([1.0, -1.0]), 0.5)

    cells = [Cell(m, s, n) for m in ("a", "b") for s, n in (("euler", 1), ("euler", 4), ("heun", 2))]
    monkeypatch.setattr(runner, "sample_cell", recorded("sample", runner.sample_cell))
    monkeypatch.setattr(runner, "_score", recorded("score", runner._score))
    monkeypatch.setattr(runner, "_store", recorded("store", runner._store))

    def run(out: str, spare: bool):
        events.clear()
        result = _run(tmp_path / out, monkeypatch, spare, {"a": GaussianFlow(torch.tensor([2.0, 0.0]), 0.7),
                                                           "b": lambda: slow_load()},   # a new source: loaded each run
                      cells, num_samples=400, metrics=("w2", "energy", "transport_cost", "solver_error"))
        return result, list(events)

    alone, _ = run("alone", spare=False)
    beside, seen = run("beside", spare=True)
    metrics = ["model", "solver", "steps", "nfe", "w2", "w2_se", "energy", "energy_se", "transport_cost",
               "solver_error", "status"]
    assert alone.frame[metrics].equals(beside.frame[metrics]) and (beside.frame["status"] == "ok").all()
    assert list(beside.frame["model"]) == ["independent"] + ["a"] * 3 + ["b"] * 3
    samples = [e for e in seen if e[0] == "sample"]
    scores = [e for e in seen if e[0] == "score"]
    load = next(e for e in seen if e[0] == "load")
    main = threading.get_ident()
    assert len(samples) == 6 and len(scores) == 6
    for _, _, start, end in scores:      # nothing scored while a sampler was timed
        assert all(end <= s_start or start >= s_end for _, _, s_start, s_end in samples)
    first, last = scores[:3], scores[3:]
    assert all(thread != main for _, thread, _, _ in first)
    assert all(thread == main for _, thread, _, _ in last)      # the last model's: stored as each finishes
    assert any(start < load[3] and end > load[2] for _, _, start, end in first)   # beside the second model's load
    stored = [e for e in seen if e[0] == "store"]
    assert len(stored) == 7 and all(end < load[3] for _, _, _, end in stored[:4])   # on disk before it ends
    assert beside.timings["metrics_beside"] > 0 and alone.timings["metrics_beside"] == 0


def test_a_failed_model_between_two_scores_its_rows_in_order(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("no weights here")

    cells = [Cell(m, s, n) for m in ("a", "broken", "b") for s, n in (("euler", 1), ("heun", 2))]

    def run(out: str, spare: bool):
        return _run(tmp_path / out, monkeypatch, spare, {"a": GaussianFlow(torch.tensor([2.0, 0.0]), 0.7),
                                                         "broken": lambda: broken(),
                                                         "b": GaussianFlow(torch.tensor([1.0, -1.0]), 0.5)},
                    cells, num_samples=300, metrics=("w2", "transport_cost")).frame

    alone, beside = run("alone", False), run("beside", True)
    columns = ["model", "solver", "steps", "status", "error", "w2", "transport_cost"]
    assert alone[columns].equals(beside[columns])
    assert list(beside["model"]) == ["independent", "a", "a", "broken", "broken", "b", "b"]
    assert list(beside["status"]) == ["ok", "ok", "ok", "failed", "failed", "ok", "ok"]


def _run(out, monkeypatch, spare: bool, models: dict, cells, **changes):
    """A stand-in toy2d suite of ``models`` run into ``out``, with a spare core for the scoring worker or without."""
    monkeypatch.setattr(runner, "cores", lambda: 2 if spare else 1)
    suite = standin("toy2d", "toy2d-behind", models, cells, **changes)
    return runner.run_suite(suite, out, device="cpu", cache_dir=out.parent / "cache", progress=False, plots=False,
                            log=lambda msg: None)

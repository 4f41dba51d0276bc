"""A cell's metrics with w2's exact solve in a worker thread on a spare core: the same values as one after another,
the solve on another thread, and a failure raised as the first failing metric in the suite's order."""

from __future__ import annotations

import dataclasses
import threading

import pytest

import rfbench.suites.evaluate as evaluate
from rfbench.metrics import METRICS
from tests.standins import toy2d_cell


@pytest.fixture(scope="module")
def scored():
    return toy2d_cell(300)


def test_w2_runs_beside_the_other_metrics_with_the_same_values(scored, monkeypatch):
    evaluation, inputs = scored
    assert "w2" in evaluation.metrics and METRICS["w2"].concurrent
    monkeypatch.setattr(evaluate, "spare_core", lambda: False)
    serial = evaluation.cell_metrics(inputs)
    threads = []
    w2 = METRICS["w2"]
    monkeypatch.setitem(METRICS._items, "w2", dataclasses.replace(w2, fn=lambda inp: (
        threads.append(threading.get_ident()), w2.fn(inp))[1]))
    monkeypatch.setattr(evaluate, "spare_core", lambda: True)
    together = evaluation.cell_metrics(inputs)
    assert list(together) == list(serial) and together == serial
    assert serial["w2"] > 0 and serial["energy"] is not None and serial["solver_error"] > 0
    assert threads and threads[0] != threading.get_ident()    # the solve ran in the worker


def test_the_first_failing_metric_in_order_is_raised(scored, monkeypatch):
    evaluation, inputs = scored
    monkeypatch.setattr(evaluate, "spare_core", lambda: True)
    w2, energy = METRICS["w2"], METRICS["energy"]

    def fail(what):
        def fn(inp):
            raise ValueError(f"{what} failed")
        return fn

    monkeypatch.setitem(METRICS._items, "w2", dataclasses.replace(w2, fn=fail("w2")))
    monkeypatch.setitem(METRICS._items, "energy", dataclasses.replace(energy, fn=fail("energy")))
    order = [m for m in evaluation.metrics if m in ("w2", "energy")]
    with pytest.raises(ValueError, match=f"{order[0]} failed"):     # w2 (in the worker) comes first in toy2d
        evaluation.cell_metrics(inputs)
    monkeypatch.setitem(METRICS._items, "w2", w2)
    with pytest.raises(ValueError, match="energy failed"):
        evaluation.cell_metrics(inputs)

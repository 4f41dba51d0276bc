"""A model that loads alone (a DDPM) trained in the scoring worker beside the first model's loading
(rfbench.suites.runner._load_beside, Behind.beside): the same weights and rows as training it in turn, nothing
beside a timed cell, Ctrl-C stops it at its next step, and networks built in two threads at once draw their initial
weights as they would alone (rfbench.threads.GLOBAL_RNG)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

import rfbench.suites.runner as runner
from baselines.ddpm import DDPM, DDPMRecipe
from baselines.rectified_flow import FlowRecipe, RectifiedFlow
from rfbench.models import MLPConfig, build_network
from rfbench.models.sources import ModelIdentity, ModelSource
from rfbench.progress import Cancelled, Progress
from rfbench.suites import SUITES, Cell, SuiteModel
from rfbench.suites.behind import Behind
from rfbench.training import TrainConfig, seeded_init
from tests.problems import GaussianFlow
from tests.standins import factory

SMALL = TrainConfig(steps=150, batch_size=128, lr=2e-3, ema_decay=0.9, seed=0)
FLOW = FlowRecipe(net=MLPConfig(hidden=32, depth=2), train=SMALL)
DIFFUSION = DDPMRecipe(net=MLPConfig(hidden=32, depth=2, time_scale=1 / 1000), train=dataclasses.replace(SMALL, seed=3))
ROW = ["model", "solver", "steps", "nfe", "status", "w2", "w2_se", "transport_cost", "model_id", "model_checkpoint"]


def _run(out, monkeypatch, spare: bool, models, cells, **changes):
    monkeypatch.setattr(runner, "cores", lambda: 2 if spare else 1)
    suite = dataclasses.replace(SUITES["toy2d"], name="toy2d-beside", models=tuple(models), cells=tuple(cells),
                                **{"repeats": 1, "metrics": ("w2", "transport_cost"), **changes})
    return runner.run_suite(suite, out, device="cpu", cache_dir=out / "cache", progress=False, plots=False,
                            log=lambda msg: None)


def test_a_ddpm_trained_beside_the_flow_has_the_weights_and_rows_of_training_it_in_turn(tmp_path, monkeypatch):
    models = [SuiteModel("1-rf", RectifiedFlow(1, FLOW)), SuiteModel("ddpm", DDPM(DIFFUSION))]
    cells = [Cell("1-rf", "euler", 4), Cell("ddpm", "ddim", 8)]
    alone = _run(tmp_path / "alone", monkeypatch, False, models, cells, num_samples=300)
    beside = _run(tmp_path / "beside", monkeypatch, True, models, cells, num_samples=300)
    assert sorted(alone.trained) == sorted(beside.trained) == ["1-rf", "ddpm"]
    assert alone.timings["training_beside"] == 0 and beside.timings["training_beside"] > 0
    assert alone.frame[ROW].equals(beside.frame[ROW]) and (beside.frame["status"] == "ok").all()
    for name in ("1-rf", "ddpm"):       # bit for bit
        (a,), (b,) = ((tmp_path / run / "cache" / "models").glob(f"{name}-*.pt") for run in ("alone", "beside"))
        first, second = torch.load(a, weights_only=False), torch.load(b, weights_only=False)
        weights = [key for key, value in first.items() if isinstance(value, dict) and value
                   and all(isinstance(t, torch.Tensor) for t in value.values())]
        assert weights and all(torch.equal(first[k][p], second[k][p]) for k in weights for p in first[k])


def test_a_model_that_loads_alone_loads_beside_the_first_never_beside_a_timed_cell(tmp_path, monkeypatch):
    events = []      # (what, thread, start, end)

    def slow(what: str, model, seconds: float):
        def load():
            start = time.perf_counter()
            time.sleep(seconds)
            events.append((what, threading.get_ident(), start, time.perf_counter()))
            return model
        return load

    def models():      # b loads longer than a
        return [SuiteModel("a", _safe(Loads(slow("load a", GaussianFlow(torch.tensor([2.0, 0.0]), 0.7), 0.2)))),
                SuiteModel("b", _safe(Loads(slow("load b", GaussianFlow(torch.tensor([1.0, -1.0]), 0.5), 1.5)),
                                      alone=True))]

    cells = [Cell(m, s, n) for m in ("a", "b") for s, n in (("euler", 1), ("heun", 2))]
    sample_cell = runner.sample_cell

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return sample_cell(*args, **kwargs)
        finally:
            events.append(("sample", threading.get_ident(), start, time.perf_counter()))

    monkeypatch.setattr(runner, "sample_cell", timed)
    in_turn = _run(tmp_path / "alone", monkeypatch, False, models(), cells, num_samples=300)
    events.clear()
    beside = _run(tmp_path / "beside", monkeypatch, True, models(), cells, num_samples=300)
    assert in_turn.frame[ROW].equals(beside.frame[ROW])
    load_a, load_b = (next(e for e in events if e[0] == what) for what in ("load a", "load b"))
    assert load_b[1] != threading.get_ident() == load_a[1]
    assert load_b[2] < load_a[3] and load_a[2] < load_b[3]          # at the same time
    samples = [e for e in events if e[0] == "sample"]
    assert samples and all(start >= load_b[3] for _, _, start, _ in samples)     # a's cells waited for b's load
    assert beside.timings["training_beside"] > 0.1 and beside.timings["training"] >= 1.0   # mostly waited for


def test_a_model_that_fails_to_load_beside_fails_its_cells_as_in_turn(tmp_path, monkeypatch):
    threads = []

    def broken():
        threads.append(threading.get_ident())
        raise RuntimeError("no weights here")

    def models():
        return [SuiteModel("a", _safe(factory(GaussianFlow(torch.tensor([2.0, 0.0]), 0.7)))),
                SuiteModel("broken", _safe(factory(broken), alone=True))]

    cells = [Cell(m, "euler", 2) for m in ("a", "broken")]
    in_turn = _run(tmp_path / "alone", monkeypatch, False, models(), cells, num_samples=200)
    beside = _run(tmp_path / "beside", monkeypatch, True, models(), cells, num_samples=200)
    assert in_turn.frame[ROW + ["error"]].equals(beside.frame[ROW + ["error"]])
    assert list(beside.frame["status"]) == ["ok", "ok", "failed"]
    assert "no weights here" in beside.frame["error"].iloc[2]
    assert threads[-1] != threading.get_ident()       # the second run loaded it in the worker


def test_a_first_model_that_may_draw_the_rng_unlocked_keeps_the_others_in_turn(tmp_path, monkeypatch):
    threads = []

    def recorded():
        threads.append(threading.get_ident())
        return GaussianFlow(torch.tensor([1.0, -1.0]), 0.5)

    models = [SuiteModel("a", factory(GaussianFlow(torch.tensor([2.0, 0.0]), 0.7))),     # says nothing of its RNG
              SuiteModel("b", _safe(factory(recorded), alone=True))]
    out = _run(tmp_path / "run", monkeypatch, True, models, [Cell(m, "euler", 2) for m in ("a", "b")],
               num_samples=200)
    assert threads == [threading.get_ident()] and out.timings["training_beside"] == 0


class Loads(ModelSource):
    """A stand-in source known without loading it, as a recipe is (a factory is loaded before the sweep, for its
    id): the sweep loads it, with ``load()``."""

    def __init__(self, load):
        self.load_fn = load

    def identity(self, suite) -> ModelIdentity:
        return ModelIdentity("stand-in", "stand-in")

    def load(self, ctx):
        return self.load_fn()


def _safe(source, alone: bool = False):
    """A stand-in source that draws no random numbers while it loads (and, with ``alone``, needs no other model)."""
    source.draws_rng_under_lock = True
    source.loads_alone = alone
    return source


@pytest.mark.parametrize("ending", [KeyboardInterrupt, RuntimeError])
def test_ctrl_c_or_an_error_stops_a_training_beside_at_its_next_step(ending):
    progress = Progress()

    def train():
        try:
            with progress.job("training b", 2000) as job:
                for step in range(1, 2001):
                    time.sleep(0.005)
                    job(step)
            return "finished"
        except Cancelled as exc:
            return str(exc)

    start = time.perf_counter()
    with pytest.raises(ending):
        with Behind(enabled=True, on_interrupt=progress.cancelled.set) as on:
            future = on.beside(train, threads=1)
            time.sleep(0.2)
            raise ending("the sweep ended")
    assert time.perf_counter() - start < 5 and future.done()
    out = [future.result()]
    assert out[0].startswith("training b: stopped at step ") and "interrupted" in out[0]
    assert "training b" not in progress.pending


def test_networks_built_in_two_threads_draw_their_initial_weights_as_alone():
    config = MLPConfig(hidden=64, depth=3)
    expected = seeded_init(lambda: build_network(config), 7).state_dict()
    stop = threading.Event()

    def others():
        while not stop.is_set():
            build_network(config)

    thread = threading.Thread(target=others)
    thread.start()
    try:
        for _ in range(100):
            got = seeded_init(lambda: build_network(config), 7).state_dict()
            assert all(torch.equal(got[k], expected[k]) for k in expected)
    finally:
        stop.set()
        thread.join()


def test_the_closing_paragraph_says_what_ran_beside_the_training():
    import types
    from pathlib import Path

    import pandas as pd

    from rfbench.cli import run_summary

    frame = pd.DataFrame({"model": ["independent", "a"], "status": ["ok", "ok"], "error": [None, None]})
    timings = {"training": 80.0, "sampling": 20.0, "metrics": 30.0, "metrics_beside": 62.0, "training_beside": 18.0,
               "total": 135.0}
    text = run_summary("toy", types.SimpleNamespace(frame=frame, timings=timings, trained=["a"]), Path("out"))
    assert ("Time 2m15s: training 1m20s, sampling 20s, metrics 30s, tables, plots and the rest 5s; on a spare core "
            "beside the main thread: 18s of training and 1m02s of metrics. Trained a") in text
    text = run_summary("toy", types.SimpleNamespace(frame=frame, timings={**timings, "training_beside": 0.0}),
                       Path("out"))
    assert "beside the main thread: 1m02s of metrics. Results" in text

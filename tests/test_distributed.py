"""torchrun: two CPU processes on the gloo backend give the metrics of one process, and write one table.

Precision/recall (and recall_se's half-samples, and the reference's k-NN radii) are computed by both processes
together, each taking a block of rows (rfbench/metrics/knn.py); the other metrics by rank 0.

The child runs the CLI on tests/cli_child.py's stand-in suite (analytic models on sklearn's digits, the
real digits extractor): the same seeds must give the same numbers whether one process samples all of them or two
processes each sample half and rank 0 gathers samples and features.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rfbench.distributed import World, batch_plan

ROOT = Path(__file__).resolve().parents[1]
METRIC_COLUMNS = ("nfe", "fid", "is", "is_10", "precision", "recall", "recall_se", "kid", "transport_cost",
                  "straightness")


def _run(launcher: list[str], out: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*launcher, "-m", "tests.cli_child", "--suite", "digits-dist", "--out", str(out),
                           "--cache", str(cache), "--quiet", "--no-plots", "--device", "cpu", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")     # the digits extractor, trained once for this module


def test_two_gloo_processes_give_the_metrics_of_one(tmp_path, cache):
    one = _run([sys.executable], tmp_path / "one", cache)
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
               tmp_path / "two", cache)
    # the spike model fails on one seed: exit status 1 (a failed cell), every other cell finished
    assert one.returncode == 1, one.stderr[-3000:]
    assert two.returncode != 0 and "1 of 6 cell(s) failed (spike)" in two.stderr, two.stderr[-3000:]
    assert two.stderr.count("1 of 6 cell(s) failed") == 1            # rank 0 alone reports
    a = pd.read_csv(tmp_path / "one" / "results.csv")
    b = pd.read_csv(tmp_path / "two" / "results.csv")
    assert len(list((tmp_path / "two" / "cells").glob("*.json"))) == len(b) == len(a) == 6
    assert list(a["model"]) == list(b["model"]) == ["independent", "wave", "wave", "wave", "noisy", "spike"]
    ok = a["status"] == "ok"
    assert list(ok) == list(b["status"] == "ok") == [True] * 5 + [False]
    for col in METRIC_COLUMNS:   # same seeds, same batches: the same numbers, gathered in seed order
        pd.testing.assert_series_equal(a.loc[ok, col], b.loc[ok, col], rtol=1e-6, check_exact=False)
    assert (a.loc[ok, "solver_stats"].fillna("") == b.loc[ok, "solver_stats"].fillna("")).all()
    assert a["fid"].iloc[1:5].notna().all() and a["straightness"].iloc[1:5].notna().all()
    sampled = b.iloc[1:5]
    assert sampled["timing"].str.endswith("processes=2").all() and (sampled["ms_per_nfe"] > 0).all()
    assert a["timing"].iloc[1:5].str.endswith("processes=1").all()
    # the failing seed lies in the second half of the range: the row says which process failed and why
    assert b["error"].iloc[5].startswith("rank 1: NonFiniteError") and a["error"].iloc[5].startswith("NonFinite")


def test_batch_plan_splits_whole_batches_in_seed_order():
    assert batch_plan(10, 3, World()) == (3, [(0, 3), (3, 6), (6, 9), (9, 10)])
    shares = [batch_plan(10, 3, World(rank=r, size=2))[1] for r in range(2)]
    assert shares == [[(0, 3), (3, 6)], [(6, 9), (9, 10)]]
    assert [b for s in shares for b in s] == batch_plan(10, 3, World())[1]
    assert batch_plan(10, None, World()) == (10, [(0, 10)])           # one process: everything at once
    assert [batch_plan(10, None, World(rank=r, size=3))[1] for r in range(3)] == [[(0, 4)], [(4, 8)], [(8, 10)]]
    # fewer batches than processes: some processes sample nothing
    assert [batch_plan(4, 4, World(rank=r, size=2))[1] for r in range(2)] == [[], [(0, 4)]]


def test_a_single_process_world_is_the_identity():
    world = World()
    x = torch.arange(6.0).reshape(3, 2)
    assert world.is_main and not world.active
    assert world.cat_rows(x) is x and world.all_objects({"a": 1}) == [{"a": 1}]
    assert world.check(None, "step") == [] and world.check("boom", "step") == ["boom"]
    world.barrier()
    world.close()


def test_a_failure_on_rank_0_stops_every_process_with_one_message(tmp_path, cache):
    """A corrupt --ref-stats file is read by rank 0 alone, after the processes have started: rank 0 names it in one
    line, the other process stops too (none waits in a collective), and no cell is written."""
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    run = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
               tmp_path / "out", cache, "--ref-stats", str(tmp_path / "bad.npz"))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("benchmark.py: error:")]
    assert len(lines) == 1 and "bad.npz is not a readable .npz" in lines[0], run.stderr[-3000:]
    assert "Traceback (most recent call last):\n  File \"/" not in run.stderr.split("ChildFailedError")[0]
    assert not (tmp_path / "out" / "cells").exists()


def test_seed_rows_make_exactly_the_rows_of_the_full_x0():
    from rfbench.noise import SeedRows
    from rfbench.suites import SUITES

    problem, seeds = SUITES["toy2d"].problem, list(range(100, 400))
    full, rows = problem.initial(seeds), SeedRows(problem.initial, seeds)
    assert rows.shape == full.shape and rows.ndim == 2 and rows.dtype == full.dtype
    for a, b in [(0, 300), (17, 50), (250, 300), (299, 400)]:
        assert torch.equal(rows[a:b], full[a:b])
    with pytest.raises(TypeError, match="SeedRows takes a slice of rows"):
        rows[3]

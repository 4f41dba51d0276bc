"""Sharded runs (``--shard K/N``): N independent jobs fill one folder and train each model once; their table is one
process's; a shard killed mid-run and run again completes it; torchrun over two "nodes" gives one process's numbers.

The jobs are child processes of the CLI (tests/cli_child.py) on ``toy2d-shard``: toy2d with small recipes of 1-RF
and 2-RF (seconds of training) and 14 cells, so that every job has cells of both models.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import rfbench
from rfbench.metrics import METRICS
from rfbench.models.cache import Cache
from rfbench.suites import SUITES
from tests.standins import wait_for

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ROWS = ["model", "solver", "steps", "grid"]


def _cli(out: Path, cache: Path, *args: str, suite: str = "toy2d-shard") -> list[str]:
    return [sys.executable, "-m", "tests.cli_child", "--suite", suite, "--out", str(out), "--cache", str(cache),
            "--no-plots", "--device", "cpu", *args]


def _run(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    return log.read_text()


def _metric_columns(suite: str) -> list[str]:
    return ["nfe"] + [col for name in SUITES_METRICS[suite] for col in METRICS[name].columns]


SUITES_METRICS = {"toy2d-shard": SUITES["toy2d"].metrics, "toy-slow": ("w2", "transport_cost", "straightness")}


def assert_same_table(one: pd.DataFrame, other: pd.DataFrame, suite: str = "toy2d-shard") -> None:
    """The same cells in the same order, every metric column and the NFE equal (max difference 0); timings differ."""
    assert other[ROWS].astype(str).values.tolist() == one[ROWS].astype(str).values.tolist()
    assert (one["status"] == "ok").all() and (other["status"] == "ok").all()
    for col in _metric_columns(suite):
        if col in one:
            a, b = one[col].to_numpy(dtype=float), other[col].to_numpy(dtype=float)
            assert ((a == b) | (pd.isna(a) & pd.isna(b))).all(), f"{col}: {a} != {b}"


def test_three_shards_give_the_table_of_one_process_and_train_each_model_once(tmp_path):
    cache, shared = tmp_path / "cache", tmp_path / "shared"
    logs = [tmp_path / f"shard{k}.log" for k in (1, 2, 3)]
    jobs = [_run(_cli(shared, cache, "--shard", f"{k}/3"), log) for k, log in zip((1, 2, 3), logs)]
    texts = [_finish(job, log) for job, log in zip(jobs, logs)]
    for name in ("1-rf", "2-rf"):      # trained by one job; the others waited for it, or found it cached
        assert sum(text.splitlines().count(f"training {name} ...") for text in texts) == 1, name
    assert any("the table holds 14 of the plan's 14 cells" in text for text in texts), texts
    one_log = tmp_path / "one.log"
    one_text = _finish(_run(_cli(tmp_path / "one", cache), one_log), one_log)
    assert "training 1-rf ..." not in one_text
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    sharded = pd.read_csv(shared / "results.csv")
    assert len(one) == 15 and one["model"].iloc[0] == "independent"
    assert_same_table(one, sharded)
    # `rfbench table` on the shared folder shows that table; a cell's key is the same whichever job made it: an
    # unsharded rerun in the shared folder keeps every cell
    table = subprocess.run([sys.executable, "-m", "rfbench.cli", "table", str(shared), "--format", "csv"], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    shown = pd.read_csv(io.StringIO(table.stdout))
    assert len(shown) == 15 and (shown["nfe"].to_numpy() == one["nfe"].to_numpy()).all()
    assert (shown["w2"].iloc[1:].to_numpy() == one["w2"].iloc[1:].to_numpy()).all()
    again = _finish(_run(_cli(shared, cache), tmp_path / "again.log"), tmp_path / "again.log")
    assert "14 cells, 14 ok (14 kept from an earlier run in this folder)" in again


def test_a_shard_killed_mid_run_and_run_again_completes_the_table(tmp_path):
    """toy-slow: eight cells of a flow whose evaluations sleep, so shard 1 of 2 can be killed between its cells."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    _finish(_run(_cli(out, cache, "--shard", "2/2", suite="toy-slow"), tmp_path / "two.log"), tmp_path / "two.log")
    assert len(pd.read_csv(out / "results.csv")) == 4       # its cells only: steps 2, 4, 6, 8
    proc = _run(_cli(out, cache, "--shard", "1/2", suite="toy-slow"), tmp_path / "one.log")
    wait_for(proc, lambda: len(list((out / "cells").glob("*.json"))) >= 4 + 2,   # its independent row, first cell
             "shard 1 wrote no cell", log=tmp_path / "one.log")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert 6 <= len(before) < 9, "killed too late to test anything"
    text = _finish(_run(_cli(out, cache, "--shard", "1/2", suite="toy-slow"), tmp_path / "rerun.log"),
                   tmp_path / "rerun.log")
    assert "the table holds 8 of the plan's 8 cells" in text, text[-2000:]
    after = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(after) == 9 and all(after[name] == blob for name, blob in before.items())
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["model"]) == ["independent"] + ["slow"] * 8
    assert list(frame["steps"].iloc[1:]) == list(range(1, 9)) and (frame["status"] == "ok").all()


LOCKER = """
import sys, time
from pathlib import Path
import torch
from rfbench.models.cache import Cache

root, gate = Path(sys.argv[1]), Path(sys.argv[2])

def train():
    (gate / "training").touch()
    while not (gate / "go").exists():      # hold the entry's lock until the test says go
        time.sleep(0.01)
    torch.manual_seed(0)
    return torch.nn.Linear(2, 2), {"seconds": 0.0, "final_loss": 0.0}

cache = Cache(root, log=lambda msg: print(msg, flush=True))
net = cache.network("toy", {"model": "toy"}, lambda: torch.nn.Linear(2, 2), train, "cpu")
print("weights", float(net.weight.sum()), flush=True)
"""


def test_two_jobs_asking_for_one_cache_entry_train_it_once(tmp_path):
    gate, root = tmp_path / "gate", tmp_path / "cache"
    gate.mkdir()
    first = _run([sys.executable, "-c", LOCKER, str(root), str(gate)], tmp_path / "first.log")
    wait_for(first, (gate / "training").exists, "the first job did not start training", log=tmp_path / "first.log")
    second = _run([sys.executable, "-c", LOCKER, str(root), str(gate)], tmp_path / "second.log")
    wait_for(second, lambda: "waiting for another job training toy" in (tmp_path / "second.log").read_text(),
             "the second job did not wait for the first", log=tmp_path / "second.log")
    (gate / "go").touch()
    one, two = _finish(first, tmp_path / "first.log"), _finish(second, tmp_path / "second.log")
    assert "training toy ..." in one and "training toy" not in two.replace("another job training toy", "")
    assert re.search(r"^loaded toy from .*toy-\w+\.pt$", two, re.M) and two.count("waiting for another job") == 1
    assert one.splitlines()[-1] == two.splitlines()[-1]         # the same weights
    # an entry that exists is read without its lock: a read-only shared cache needs no lock file
    entry = next((root / "models").glob("toy-*.pt"))
    entry.with_name(entry.name + ".lock").unlink(missing_ok=True)
    lines: list[str] = []
    Cache(root, log=lines.append).network("toy", {"model": "toy"}, lambda: torch.nn.Linear(2, 2),
                                          lambda: pytest.fail("trained again"), "cpu")
    assert lines[0].startswith("loaded toy") and not list((root / "models").glob("*.lock"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nodes(rendezvous: list[str], out: Path, cache: Path, *args: str, logs: Path) -> None:
    """Two torchrun "nodes" of one process each on this machine (gloo), as docs/gpu.md runs them on two hosts."""
    nodes = [_run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   *[arg.replace("RANK", str(rank)) for arg in rendezvous], *_cli(out, cache, *args)[1:]],
                  logs / f"node{rank}.log") for rank in (0, 1)]
    for rank, node in enumerate(nodes):
        _finish(node, logs / f"node{rank}.log")


def test_two_torchrun_nodes_over_gloo_give_the_numbers_of_one_process_and_compose_with_shards(tmp_path):
    """docs/gpu.md's multi-node commands, each as two "nodes" of one process on localhost: a c10d rendezvous runs
    shard 1 of 2 and a static one (--node_rank) shard 2 into one folder, whose table is one process's."""
    cache, shared = tmp_path / "cache", tmp_path / "shared"
    batch = ("--batch-size", "100",          # one process and two take the same batches
             "--models", "1-rf")                # one model's seven cells: the test is about the processes
    _finish(_run(_cli(tmp_path / "one", cache, *batch), tmp_path / "one.log"), tmp_path / "one.log")
    (tmp_path / "c10d").mkdir()
    (tmp_path / "static").mkdir()
    _nodes(["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "rfbench-test"],
           shared, cache, *batch, "--shard", "1/2", logs=tmp_path / "c10d")
    _nodes(["--node_rank", "RANK", "--master_addr", "127.0.0.1", "--master_port", str(_free_port())],
           shared, cache, *batch, "--shard", "2/2", logs=tmp_path / "static")
    one, sharded = pd.read_csv(tmp_path / "one" / "results.csv"), pd.read_csv(shared / "results.csv")
    assert_same_table(one, sharded)
    assert one["timing"].iloc[1:].str.endswith("processes=1").all()
    assert sharded["timing"].iloc[1:].str.endswith("processes=2").all()


def test_a_link_at_the_folders_lock_is_replaced_not_opened(tmp_path):
    """The lock a shard takes on --out (rfbench.files.exclusive) is a file of its own: a link there to a file
    outside --out is removed, and the file it pointed at is left as it was (filelock refused the link, failing the
    job; older filelock versions truncated the file it pointed at)."""
    from rfbench.cli import main
    from rfbench.suites import Cell
    from tests.standins import registered, standin

    class Shift:
        input_shape = (2,)

        def __call__(self, x, t):
            return x * 0 + 0.5

    suite = standin("toy2d", "toy2d-lock-link", {"shift": Shift()}, num_samples=30, metrics=("w2",),
                    cells=(Cell("shift", "euler", 1), Cell("shift", "euler", 2)))
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.write_bytes(b"precious")
    out.mkdir()
    (out / ".results.lock").symlink_to(os.path.relpath(victim, out))
    with registered(suite):
        assert main(["--suite", "toy2d-lock-link", "--shard", "1/2", "--out", str(out), "--cache",
                     str(tmp_path / "cache"), "--quiet", "--no-plots", "--device", "cpu"]) == 0
    assert victim.read_bytes() == b"precious" and not (out / ".results.lock").is_symlink()


def test_shard_values_are_checked_in_one_line():
    for value in ("0/3", "4/3", "3", "a/b", (0, 2)):
        with pytest.raises(ValueError, match=r"^--shard \(shard=\) takes K/N with 1 <= K <= N .*got") as exc:
            rfbench.run("toy2d", shard=value, out="unused")
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="shard='1/2' needs out="):
        rfbench.run("toy2d", shard="1/2")


def test_the_slurm_example_parses_as_the_cifar_suite_takes_it(tmp_path):
    """examples/slurm_array.sh is valid bash, and its rfbench command line parses (nothing runs: no SLURM here)."""
    script = ROOT / "examples" / "slurm_array.sh"
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = script.read_text()
    assert "#SBATCH --array=1-8" in text
    command = next(line for line in text.replace("\\\n", " ").splitlines()
                   if "benchmark.py" in line and not line.lstrip().startswith("#"))
    argv = shlex.split(command)
    argv = argv[argv.index("benchmark.py") + 1:]
    (tmp_path / "data").mkdir()
    (tmp_path / "checkpoints").mkdir()
    values = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8", "SHARED": str(tmp_path),
              "DATA": str(tmp_path / "data"), "CKPTS": str(tmp_path / "checkpoints")}
    argv = [re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], arg) for arg in argv]
    from rfbench.cli import build_parser
    from rfbench.cli_parsing import config_from_args
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert args.suite == "cifar" and config.shard == (3, 8)
    assert (args.data_dir, args.out, args.cache) == (str(tmp_path / "data"), str(tmp_path / "runs" / "cifar"),
                                                    tmp_path / "cache")

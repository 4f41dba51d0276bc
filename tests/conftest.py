"""Test-wide settings: the installed plugins (rfbench's baselines among them) are loaded as the CLI loads them;
GPU tests skip where there is no CUDA; nothing here touches the network; and the tests write only inside temporary
folders: $HOME and $RFBENCH_CACHE point into one for the whole session (child processes inherit them), and the
session fails if the user's own cache or the repository gained a file."""

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from rfbench.plugins import load_entry_points

REPO = Path(__file__).resolve().parent.parent
_REAL_CACHE = Path(os.environ.get("RFBENCH_CACHE") or Path.home() / ".cache" / "rfbench")
_HOME = tempfile.mkdtemp(prefix="rfbench-test-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["HOME"] = _HOME
os.environ["RFBENCH_CACHE"] = str(Path(_HOME) / ".cache" / "rfbench")
os.environ.setdefault("MPLCONFIGDIR", str(Path(_HOME) / ".config" / "matplotlib"))
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(Path(_HOME) / ".hypothesis")   # not ./.hypothesis in the repo

load_entry_points()

# The test command runs two pytest-xdist workers (pyproject's addopts: -n 2 --dist loadscope: a module's tests, and
# its module-scoped fixtures, on one worker): one torch thread each, inherited by the child processes the tests
# start, so that the workers never oversubscribe two cores (a tiny model beside one other CPU-bound process ran 47x
# slower with torch's default threads)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# what tools other than the tests leave in a checkout (bytecode, the install, linters, the virtual environment)
_TOOLS = ("__pycache__", ".egg-info", ".ruff_cache", ".mypy_cache", ".venv", ".pytest_cache")


def _untracked() -> set[str] | None:
    """The repository's untracked files, ignored ones included but for the tools' own (None outside a git
    checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored", "--untracked-files=all"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line[3:] for line in out.splitlines()
            if line.startswith(("?? ", "!! ")) and not any(tool in line for tool in _TOOLS)}


def _listing(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root.is_dir() else set()


def pytest_sessionstart(session):
    session.config._rfbench_before = (_untracked(), _listing(_REAL_CACHE))


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when a test wrote outside its temporary folders: into the repository (a run without --out
    writes runs/SUITE in the working folder) or into the user's model cache."""
    untracked, cached = session.config._rfbench_before
    now_untracked = _untracked()
    new = sorted((now_untracked or set()) - (untracked or set())) if untracked is not None else []
    new += sorted(_listing(_REAL_CACHE) - cached)
    if new:
        print(f"\ntests wrote outside their temporary folders: {', '.join(new[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The toy2d models and cells the tests need: the rectified flows trained from a cold cache (the reflow chain and the
# distillation) and the claims' cells (Euler at every step count, rk45). The toy DDPM (20 s of training) and the
# other 132 cells (Heun and the fast solvers: two minutes of sampling and metrics) are left to `bash .ci/run`, which
# gates every cell of a full retrain against results/toy2d.csv after the tests.
TOY2D_TEST_MODELS = ("1-rf", "2-rf", "3-rf", "2-rf-distill")
TOY2D_TEST_SOLVERS = ("euler", "rk45")


@pytest.fixture(scope="session")
def toy2d(tmp_path_factory):
    """The toy2d suite's flows from a cold cache (about 100 s on 2 CPU cores) and their Euler and rk45 cells (15 s),
    shared by the tests of its claims and of the examples that run beside its models. Under pytest-xdist the workers
    share one model cache: the first to get here trains, a later one waits for it (a file lock) and only samples."""
    import dataclasses
    import json

    from filelock import FileLock

    from rfbench.suites import SUITES
    from rfbench.suites.runner import run_suite
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "toy2d-models"
    root = tmp_path_factory.mktemp("toy2d")
    cache, trained = shared / "cache", shared / "trained.json"
    with FileLock(f"{shared}.lock"):
        out = run_suite(SUITES["toy2d"], root / "out", device="cpu", cache_dir=cache, progress=False,
                        log=lambda msg: None, models=TOY2D_TEST_MODELS, solvers=TOY2D_TEST_SOLVERS)
        if not trained.exists():      # the cold run: what it trained, for the tests on a later worker
            trained.write_text(json.dumps(out.trained))
    return dataclasses.replace(out, trained=json.loads(trained.read_text())), root, cache


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


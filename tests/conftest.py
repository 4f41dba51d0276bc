"""Test-wide settings: the installed plugins (rfbench's baselines among them) are loaded as the CLI loads them;
GPU tests skip where there is no CUDA; nothing here touches the network."""

import os
from pathlib import Path

import pytest
import torch

from rfbench.plugins import load_entry_points

load_entry_points()


@pytest.fixture(scope="session")
def toy2d(tmp_path_factory):
    """The toy2d suite from a cold cache (about 2 minutes on 2 CPU cores), shared by the tests of its claims and of
    the examples that run beside its models: a fresh folder, or $RFBENCH_CI_CACHE when .ci/run passes an empty one
    so that its regression gate reuses the trained models instead of training them again."""
    from rfbench.suites import SUITES
    from rfbench.suites.runner import run_suite
    root = tmp_path_factory.mktemp("toy2d")
    cache = Path(os.environ.get("RFBENCH_CI_CACHE") or root / "cache")
    out = run_suite(SUITES["toy2d"], root / "out", device="cpu", cache_dir=cache, progress=False,
                    log=lambda msg: None)
    return out, root, cache


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

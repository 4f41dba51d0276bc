"""Where a number came from: code commit, library versions, device and date."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from rfbench.version import __version__


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(device_name: str, dtype: str) -> dict:
    """The provenance columns of every result row. ``device_name`` is what the caller measured on."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "device": device_name,
        "cpu_kernels": _cpu_kernels(),
        "dtype": dtype,
        "torch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "scipy_version": _version("scipy"),
        "rfbench_version": __version__,
        "python_version": platform.python_version(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_kernels() -> str | None:
    """ATen's CPU kernel level of this process (``default``, ``avx2``, ``avx512``, ...), where torch is loaded."""
    torch = sys.modules.get("torch")
    return torch.backends.cpu.get_cpu_capability() if torch is not None else None

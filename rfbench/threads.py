"""How many CPU threads torch uses for a run, and how busy the machine was while a cell was timed.

torch's default (one intra-op thread per core) pays off for large networks and collapses for small ones on a
shared machine, where its threads spin waiting for each other (docs/speed.md has the measurements). So a CPU run
defaults to one thread for models below :data:`SMALL_MODEL_PARAMS` (every model of the CPU suites) and torch's
default for larger ones; ``--threads N`` overrides both. Every row records its thread count and the load average
before and after its timed runs. These are torch's intra-op threads: rfbench starts no thread of its own.
"""

from __future__ import annotations

import contextlib
import os

import torch

SMALL_MODEL_PARAMS = 5_000_000      # below this, one intra-op thread (see the module docstring)
DEFAULT_THREADS = torch.get_num_threads()   # torch's own choice, read before rfbench changes it


def check_threads(threads) -> int | None:
    """``threads`` as given to ``--threads`` / ``rfbench.run(threads=...)``: None (automatic) or an integer >= 1."""
    if threads is None or threads == "auto":
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads takes an integer >= 1 (or auto), got {threads!r}")
    return threads


def parameter_count(model) -> int | None:
    """Parameters of a model (or of the network inside a wrapper such as DiffusionModel); None when unknown."""
    for candidate in (model, getattr(model, "net", None), getattr(model, "module", None)):
        if isinstance(candidate, torch.nn.Module):
            return sum(p.numel() for p in candidate.parameters())
    return None


def training_threads(requested: int | None, device: torch.device) -> int:
    """The intra-op threads a run trains and sets up on: ``requested`` if given, else one on the CPU (where each
    model then samples on :func:`threads_for`) and torch's default on a GPU."""
    if requested is not None:
        return requested
    return 1 if device.type == "cpu" else DEFAULT_THREADS


def threads_for(model, requested: int | None, device: torch.device) -> int:
    """The intra-op threads to sample ``model`` with: ``requested`` if given; on the CPU one for a small (or unknown)
    model and torch's default for a large one; on a GPU torch's default (the CPU only feeds it)."""
    if requested is not None:
        return requested
    if device.type != "cpu":
        return DEFAULT_THREADS
    count = parameter_count(model)
    return DEFAULT_THREADS if count is not None and count >= SMALL_MODEL_PARAMS else 1


@contextlib.contextmanager
def using_threads(threads: int):
    """torch's intra-op thread count set to ``threads`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, ours included); None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_note(start: float | None, end: float | None) -> str | None:
    """A note for a cell timed while more processes wanted to run than there are cores (its times then measure the
    contention as well as the sampler), else None."""
    loads = [x for x in (start, end) if x is not None]
    if not loads or max(loads) <= cores() + 0.5:
        return None
    return (f"timed on a busy machine (load average {max(loads):g} on {cores()} cores): wall_clock_s and ms_per_nfe "
            f"are inflated")

"""Scoring a model's cells on a spare core while the sweep loads (trains) the next model.

A cell's metrics are not timed, and on a CPU suite they cost more than its sampling (toy2d: w2's exact solve,
0.4-0.6 s a cell, against 0.1-0.3 s for three timed runs of the sampler), while training the next model leaves the
other core idle. So the sweep queues each cell's scoring while it samples the model's cells, starts the queue in
one worker thread once the last of them is sampled, and settles it (waits, then stores the rows in their order)
before it times anything again: nothing is scored while a sampler is timed, and the rows, their order and their
values are those of scoring each cell as it finishes. Queued samples are held in memory up to
:data:`PENDING_BYTES`; past that the queue is scored at once. The last model to load has nothing to be scored
beside, so its cells are scored and stored as each finishes; a run killed (SIGKILL) while it samples an earlier
model loses that model's sampled but unscored cells, never a stored row.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch

PENDING_BYTES = 256 * 2 ** 20      # samples, features and reference solutions held for queued cells


class Behind:
    """The queue of scoring jobs and of what follows each (storing its row), in the sweep's order.

    ``enabled`` False (one core, or a torchrun whose processes score together): every job runs at once, in the
    caller's thread, as the sweep did before. ``inline_s``: the seconds of jobs run so; ``busy_s``: the seconds the
    worker spent scoring, of which ``waited_s`` (and the rows' storing) kept the sweep waiting: the rest ran beside
    its other work."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.queued: list[tuple[Callable[[], object] | None, Callable, int]] = []
        self.started: list[tuple[Future | None, Callable]] = []
        self.pool: ThreadPoolExecutor | None = None
        self.busy_s = 0.0
        self.waited_s = 0.0
        self.inline_s = 0.0

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.settle()         # on an error too: the rows already computed are stored before it propagates
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def add(self, job: Callable[[], object] | None, then: Callable, size: int = 0, defer: bool = True) -> None:
        """Queue ``job`` (None: nothing to compute) and ``then(result)`` after it. They run now, in the caller's
        thread, with the queue off, with nothing queued or started before a ``job`` of None, and with ``defer``
        False (after what is pending): the last model's cells, which no loading follows, are stored as they
        finish."""
        if not defer:
            self.settle()
        if not self.enabled or not defer or (job is None and not self.queued and not self.started):
            start = time.perf_counter()
            result = job() if job is not None else None
            self.inline_s += time.perf_counter() - start
            then(result)
            return
        self.queued.append((job, then, size))
        if sum(s for _, _, s in self.queued) > PENDING_BYTES:
            self.start()
            self.settle()

    def start(self) -> None:
        """Hand every queued job to the worker (they run one after another, in order)."""
        if not self.queued:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="rfbench-score")
        for job, then, _ in self.queued:
            self.started.append((self.pool.submit(self._timed, job) if job is not None else None, then))
        self.queued.clear()

    def settle(self) -> None:
        """Start the queued jobs, wait for every job and run what follows each, in order."""
        self.start()
        self.wait()

    def wait(self) -> None:
        """Wait for the started jobs (not the queued ones) and run what follows each, in order: before anything is
        timed."""
        start = time.perf_counter()
        try:
            while self.started:
                future, then = self.started.pop(0)
                then(future.result() if future is not None else None)
        finally:
            self.waited_s += time.perf_counter() - start

    def _timed(self, job: Callable[[], object]) -> object:
        start = time.perf_counter()
        try:
            return job()
        finally:
            self.busy_s += time.perf_counter() - start


def held_bytes(*tensors) -> int:
    """Bytes of the tensors a queued job holds (None ignored)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

"""Scoring a model's cells on a spare core while the sweep loads (trains) the next model.

A cell's metrics are not timed, and on a CPU suite they cost more than its sampling (toy2d: w2's exact solve,
0.4-0.6 s a cell, against 0.1-0.3 s for three timed runs of the sampler), while training the next model leaves the
other core idle. So the sweep queues each cell's scoring while it samples the model's cells, starts the queue in
one worker thread once the last of them is sampled, and waits for it before it times anything again (or probes
the GPU's memory for a batch size): nothing is scored while a sampler is timed, and the rows, their order and their
values are those of scoring each cell as it finishes. The worker stores each row as soon as it is scored (the
main thread stores nothing while jobs are pending), so a run killed (SIGKILL) while the next model trains keeps
every row scored so far; killed while it samples a model, it loses that model's sampled but unscored cells.
Ctrl-C lets the job in progress finish and store its row, and drops the queue. Queued samples are held in memory
up to :data:`PENDING_BYTES`; past that the queue is scored at once. The last model to load has nothing to be
scored beside, so its cells are scored and stored as each finishes.

The worker runs torch on one intra-op thread and computes a cell's metrics one after another (no second worker
for w2: :func:`in_worker`): the cores are the main thread's and its.

Before the first model loads, the worker may also train a model that needs no other (:meth:`Behind.beside`; the
sweep does so for a source marked ``loads_alone``, such as a DDPM beside the rectified flows), on the sweep's loading
threads: its weights are those of training it in turn (the global RNG is drawn under
:data:`rfbench.threads.GLOBAL_RNG`), and the sweep waits for it before it times anything, like for the scoring.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch

from rfbench.threads import using_threads

PENDING_BYTES = 256 * 2 ** 20      # samples, features and reference solutions held for queued cells
_WORKER = threading.local()


def in_worker() -> bool:
    """Whether this thread is the worker that scores behind the sweep."""
    return getattr(_WORKER, "active", False)


def _worker_start() -> None:
    _WORKER.active = True
    torch.set_num_threads(1)


class Behind:
    """The queue of scoring jobs and of what follows each (storing its row), in the sweep's order.

    ``enabled`` False (one core; a torchrun, whose processes score together; TF32 sampling, whose process-wide
    matmul precision the worker's exact k-NN products would race with): every job runs at once, in the caller's
    thread, as the sweep did before. ``inline_s``: the seconds of jobs run so; ``busy_s``: the seconds the worker
    spent scoring and storing, of which ``waited_s`` kept the sweep waiting: the rest ran beside its other work;
    ``trained_s`` and ``train_waited_s`` the same of the models trained beside (:meth:`beside`). ``on_interrupt``:
    called on Ctrl-C before the worker is waited for (a training job beside stops at its next step)."""

    def __init__(self, enabled: bool, on_interrupt: Callable[[], None] | None = None):
        self.enabled = enabled
        self.on_interrupt = on_interrupt
        self.queued: list[tuple[Callable[[], object] | None, Callable, int]] = []
        self.started: list[tuple[Future, bool]] = []      # (future, whether it trains a model)
        self.pool: ThreadPoolExecutor | None = None
        self.busy_s = 0.0
        self.waited_s = 0.0
        self.inline_s = 0.0
        self.trained_s = 0.0
        self.train_waited_s = 0.0

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        interrupted = kind is not None and not issubclass(kind, Exception)   # Ctrl-C: no more scoring
        if kind is not None and (interrupted or any(training for _, training in self.started)):
            self._interrupt()      # the run is ending: a model training beside stops at its next step
        try:
            if interrupted:
                self.queued.clear()
            else:
                self.settle()     # on an error too: the rows of what was sampled are stored before it propagates
        except BaseException as error:
            if not isinstance(error, Exception):       # Ctrl-C while the rows were being stored
                interrupted = True
                self.queued.clear()
                self._interrupt()
            raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=interrupted)

    def _interrupt(self) -> None:
        if self.on_interrupt is not None:
            self.on_interrupt()

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
            self.settle()

    def start(self) -> None:
        """Hand every queued job to the worker: it runs them one after another, each followed by its ``then``."""
        if not self.queued:
            return
        self.started += [(self._pool().submit(self._run, job, then), False) for job, then, _ in self.queued]
        self.queued.clear()

    def beside(self, train: Callable[[], object], threads: int) -> Future:
        """Start ``train`` (loading a model that trains from nothing but its recipe) in the worker now, on
        ``threads`` intra-op threads, after the jobs started before it and before the queued ones; its future holds
        what it returns. Only with the queue on."""
        def job():
            with using_threads(threads):
                return train()

        future = self._pool().submit(self._run, job, None, True)
        self.started.append((future, True))
        return future

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="rfbench-behind", initializer=_worker_start)
        return self.pool

    def settle(self) -> None:
        """Start the queued jobs and wait for every job."""
        self.start()
        self.wait()

    def wait(self) -> None:
        """Wait for the started jobs (not the queued ones), raising the first error: before anything is timed."""
        while self.started:
            future, training = self.started[0]
            start = time.perf_counter()
            try:
                future.result()
            finally:
                self.started.pop(0)
                if training:
                    self.train_waited_s += time.perf_counter() - start
                else:
                    self.waited_s += time.perf_counter() - start

    def _run(self, job: Callable[[], object] | None, then: Callable | None, training: bool = False) -> object:
        start = time.perf_counter()
        try:
            result = job() if job is not None else None
            if then is not None:
                then(result)
            return result
        finally:
            if training:
                self.trained_s += time.perf_counter() - start
            else:
                self.busy_s += time.perf_counter() - start


def held_bytes(*tensors) -> int:
    """Bytes of the tensors a queued job holds (None ignored)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

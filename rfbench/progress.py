"""Progress that tells the truth: the sweep's bar counts work, and long jobs (training, reflow pairs) report as they
run.

The unit of work is one model evaluation on one sample: a cell costs its NFE x samples x timed runs, a reference
solve its NFE x rows, and a training step of batch B ``TRAIN_EVALS_PER_SAMPLE`` x B (a forward and a backward pass,
the backward counted as two forwards). Work whose size is unknown in advance is put on the bar when it becomes
known (training and reflow pairs: when they start, since a model loaded from the cache costs nothing), and an
adaptive solve is put on as an estimate (the NFE last measured for the same kind of solve, else
``ADAPTIVE_NFE_GUESS``) that is corrected when it finishes. The bar's ETA is the work left at the run's average rate.

A job (:meth:`Progress.job`) is shown as a bar of its own where stderr is a terminal, as a plain line every 10% of
its steps where it is not (CI logs, nohup), and not at all when progress is off.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

from tqdm.auto import tqdm

TRAIN_EVALS_PER_SAMPLE = 3   # a training step of batch B counts as 3 B model evaluations: forward + backward
ADAPTIVE_NFE_GUESS = 200     # rk45 before any is measured (toy2d's flows at rtol 1e-5: 116-308 NFE)
LOSS_EMA = 0.98              # the loss shown: an exponential moving average over about 50 steps
REPORTS = 10                 # without a terminal: one line per 10% of a job's steps


def duration(seconds: float) -> str:
    """``48s``, ``1m48s``, ``2h05m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """A run's progress: whether it is shown (``enabled``), where lines go (``say``), whether stderr is a terminal
    (``tty``, read from ``sys.stderr`` when None), and the sweep's ``bar`` (a tqdm bar counted in model evaluations,
    or None). The default shows nothing.

    The bar's total is a ledger of expected work: :meth:`expect` puts an item on it (known work, or an adaptive solve
    of ``rows`` samples, estimated), :meth:`finish` takes it off with the work measured (or none: not done)."""

    def __init__(self, enabled: bool = False, say: Callable[[str], None] = print, bar: tqdm | None = None,
                 tty: bool | None = None):
        self.enabled = enabled
        self.say = say
        self.bar = bar
        self.tty = getattr(sys.stderr, "isatty", lambda: False)() if tty is None else tty
        self.total = 0.0                      # the bar's total and count, kept here whether there is a bar or not
        self.done = 0.0
        self.pending: dict[str, tuple[float, str | None, int]] = {}   # key -> (estimate, adaptive kind, rows)
        self.measured: dict[str, float] = {}  # adaptive kind -> the NFE it last took

    # -- the sweep's bar -------------------------------------------------------------------------------------------

    def status(self, text: str) -> None:
        """What the run is doing now (the bar's postfix)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def grow(self, work: float) -> None:
        """Work newly known to come (negative: work that will not be done after all)."""
        self.total += work
        if self.bar is not None:
            self.bar.total = self.total        # shown at the bar's next refresh

    def advance(self, work: float) -> None:
        """Work done."""
        self.done += work
        if self.bar is not None and work:
            self.bar.update(work)

    def nfe_estimate(self, kind: str) -> float:
        """The NFE expected of an adaptive solve of ``kind``: the last measured, else ``ADAPTIVE_NFE_GUESS``."""
        return self.measured.get(kind, ADAPTIVE_NFE_GUESS)

    def expect(self, key: str, work: float | None = None, *, adaptive: str | None = None, rows: int = 0) -> None:
        """Put ``key`` on the bar: ``work`` model evaluations, or for an ``adaptive`` solve of ``rows`` samples (kind:
        "rk45", "reference rk45", ...) an estimate, revised whenever a solve of that kind is measured."""
        estimate = work if work is not None else self.nfe_estimate(adaptive) * rows
        before = self.pending.pop(key, (0.0, None, 0))[0]       # expected again: the new estimate replaces it
        self.pending[key] = (estimate, adaptive, rows)
        self.grow(estimate - before)

    def finish(self, key: str, work: float | None) -> None:
        """Take ``key`` off the ledger with the ``work`` it took (None: it was not done; an item never expected is
        added now). A measured adaptive solve revises the estimates of the pending ones of its kind."""
        estimate, kind, rows = self.pending.pop(key, (0.0, None, 0))
        if work is None:
            self.grow(-estimate)
            return
        self.grow(work - estimate)
        self.advance(work)
        if kind is not None and rows:
            self.learn(kind, work / rows)

    def learn(self, kind: str, nfe: float) -> None:
        """An adaptive solve of ``kind`` took ``nfe`` evaluations: the pending ones of its kind are expected alike."""
        self.measured[kind] = nfe
        change = 0.0
        for key, (estimate, other, rows) in self.pending.items():
            if other == kind:
                self.pending[key] = (nfe * rows, kind, rows)
                change += nfe * rows - estimate
        if change:
            self.grow(change)

    # -- long jobs ---------------------------------------------------------------------------------------------------

    def job(self, desc: str, total: int, *, unit: str = "step", work_per_step: float = 0.0) -> "Job":
        """A job of ``total`` steps, reported while it runs (use it as a context manager and call it after each
        step); each step adds ``work_per_step`` model evaluations to the sweep's bar (the job's whole work is put on
        the bar when it starts)."""
        return Job(self, desc, total, unit, work_per_step)

    def training(self, name: str, config) -> "Job":
        """The job of training ``name`` with a :class:`~rfbench.training.TrainConfig` (its steps and batch size):
        pass it as ``fit(..., progress=job)``."""
        return self.job(f"training {name}", config.steps, work_per_step=TRAIN_EVALS_PER_SAMPLE * config.batch_size)

    def solves(self, desc: str, kind: str, sizes: list[int]) -> "Solves":
        """The job of adaptive solves of batches of ``sizes`` samples (reflow pairs), whose NFE is known only once
        each has run: estimated on the bar (``kind``: whose measured NFE to expect), then corrected; shown by the
        flow time each batch has reached."""
        return Solves(self, desc, kind, sizes)


class Job:
    """One long job of :class:`Progress`: ``job(step, loss=None)`` after each step (``step``: steps done, may be
    fractional; ``loss``: shown as a moving average). Shown as a tqdm bar on a terminal, as a line every 10% of the
    steps without one ("training 1-rf: step 600/6000 (10%), loss 0.123, 12s elapsed, ETA 1m48s")."""

    def __init__(self, progress: Progress, desc: str, total: int, unit: str, work_per_step: float):
        if total < 1:
            raise ValueError(f"a job needs at least one step, got total={total}")
        self.progress, self.desc, self.total, self.unit = progress, desc, total, unit
        self.work_per_step = work_per_step
        self.step: float = 0
        self.loss: float | None = None
        self._ema, self._updates = 0.0, 0
        self.start = time.perf_counter()
        self.next_report = 1                  # the next line is due at next_report / REPORTS of the job
        self.bar = None
        progress.expect(desc, total * work_per_step)     # replaces the run's estimate of this job, if it made one
        progress.status(desc)
        if progress.enabled and progress.tty:
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, step: float, loss: float | None = None) -> None:
        step = min(step, self.total)
        self.progress.advance((step - self.step) * self.work_per_step)
        if self.bar is not None:
            self.bar.update(step - self.step)
        self.step = step
        if loss is not None:
            self._updates += 1
            self._ema = LOSS_EMA * self._ema + (1 - LOSS_EMA) * loss
            self.loss = self._ema / (1 - LOSS_EMA ** self._updates)     # bias-corrected, as Adam's moments
            if self.bar is not None and (self._updates % 10 == 0 or step == self.total):
                self.bar.set_postfix_str(f"loss {self.loss:.4g}", refresh=False)
        if self.bar is None and self.progress.enabled and step >= self.next_mark():
            while step >= self.next_mark():
                self.next_report += 1
            self.progress.say(self.line())

    def next_mark(self) -> float:
        """The step of the next plain line: the next 10% of the job."""
        return self.total * self.next_report / REPORTS if self.next_report <= REPORTS else math.inf

    def line(self) -> str:
        """The plain report: steps, share done, loss, time spent and left."""
        elapsed = time.perf_counter() - self.start
        share = self.step / self.total
        parts = [f"{self.desc}: {self.position()} ({share:.0%})"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        parts.append(f"{duration(elapsed)} elapsed")
        if share < 1:
            parts.append(f"ETA {duration(elapsed * (1 - share) / share)}")
        return ", ".join(parts)

    def position(self) -> str:
        shown = self.step if isinstance(self.step, int) else f"{self.step:.2f}"
        return f"{self.unit} {shown}/{self.total}"

    def close(self) -> None:
        """End the job: its bar goes, and work it did not do (it failed) leaves the sweep's total."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        left = self.total - self.step
        if left > 0:
            self.progress.grow(-left * self.work_per_step)
            self.step = self.total
        self.progress.pending.pop(self.desc, None)  # its work is on the bar as done (or left the total)


class Solves(Job):
    """Adaptive solves of a few batches (:meth:`Progress.solves`): ``callback(i)`` is the sampler callback of batch
    ``i`` (it reports the flow time reached), ``measured(i, nfe)`` its NFE once solved."""

    def __init__(self, progress: Progress, desc: str, kind: str, sizes: list[int]):
        super().__init__(progress, desc, len(sizes), "batch", 0.0)
        self.sizes = list(sizes)
        self.keys = [f"{desc}, batch {i + 1}/{len(sizes)}" for i in range(len(sizes))]
        for key, rows in zip(self.keys, self.sizes):
            progress.expect(key, adaptive=kind, rows=rows)

    def callback(self, i: int) -> Callable:
        """``callback(step, t, x, v)`` for :func:`rfbench.sample`: batch ``i`` has reached flow time ``t``."""
        return lambda step, t, x, v: self(i + float(t))

    def position(self) -> str:
        done = int(self.step)
        if self.total == 1:
            return f"t = {self.step:.2f}"
        if self.step == done:
            return f"{done}/{self.total} batches solved"
        return f"batch {done + 1}/{self.total} at t = {self.step - done:.2f}"

    def measured(self, i: int, nfe: float) -> None:
        self.progress.finish(self.keys[i], nfe * self.sizes[i])
        self(i + 1)

    def close(self) -> None:
        for key in self.keys:          # batches never solved (a failure) leave the sweep's total
            if key in self.progress.pending:
                self.progress.finish(key, None)
        super().close()

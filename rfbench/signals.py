"""How a run is stopped from outside: SIGTERM (what SLURM and most schedulers send before they kill a job) is
turned into the interruption Ctrl-C raises, so both stop a run alike: the cell in hand dropped, the finished ones
kept (:func:`rfbench.cli.main` says which and exits 143 or 130)."""

from __future__ import annotations

import contextlib
import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as Ctrl-C stops it."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM (what SLURM and most schedulers send before they kill a job) raises
    :class:`Terminated`; the previous handler is put back after it. Only the main thread may set a handler: from
    another thread (where ``signal.signal`` refuses with a ValueError) SIGTERM keeps its default."""
    def terminate(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:      # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

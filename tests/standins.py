"""Stand-in models and suites for tests of the runner, the CLI and the gate: models that need no training, put into
suites through the public doors (``Factory`` sources, ``register_suite``), as a user's plugin would."""

from __future__ import annotations

import contextlib
import dataclasses

from rfbench.models.sources import Factory
from rfbench.suites import SUITES, Suite, SuiteModel, register_suite


def factory(model, kind: str = "flow") -> Factory:
    """A source that loads ``model`` (an object, or a zero-argument function returning one or raising)."""
    load = model if _is_plain_function(model) else (lambda: model)
    return Factory(load, kind=kind)


def _is_plain_function(obj) -> bool:
    import inspect
    return inspect.isfunction(obj) and not inspect.signature(obj).parameters


def standin(base: str | Suite, name: str, models: dict, cells, **changes) -> Suite:
    """A copy of suite ``base`` named ``name`` with stand-in ``models`` (name -> object, zero-argument function, or
    (object, kind)) and ``cells``."""
    suite = SUITES[base] if isinstance(base, str) else base
    entries = []
    for model_name, value in models.items():
        obj, kind = value if isinstance(value, tuple) else (value, "flow")
        entries.append(SuiteModel(model_name, factory(obj, kind)))
    changes.setdefault("repeats", 1)     # one timed run per cell unless a test asks for more (toy2d times three)
    return dataclasses.replace(suite, name=name, models=tuple(entries), cells=tuple(cells), **changes)


@contextlib.contextmanager
def registered(suite: Suite):
    """``suite`` registered (through the public door) for the block, removed after it."""
    register_suite(suite)
    try:
        yield suite
    finally:
        SUITES.remove(suite.name)


def wait_for(proc, ready, what: str, seconds: float = 120, log=None) -> None:
    """Poll ``ready()`` until it holds, while the child process ``proc`` still runs; fail naming ``what`` (and the
    tail of the file ``log`` or ``proc``'s stderr pipe) when the process ends first or ``seconds`` pass."""
    import time
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log is not None else (proc.stderr.read().decode()[-2000:]
                                                                    if proc.stderr else "")
            raise AssertionError(f"{what}: {'the process ended' if proc.poll() is not None else 'timed out'}\n{tail}")
        time.sleep(0.02)

"""Resume: which cells already stored in a run's folder a rerun keeps instead of computing again.

A stored cell is kept when it finished (status ok), has the cell's key (the schema's key columns: suite version,
samples, seeds, solver, steps, options, extractor, reference, and the model's identity: its recipe's hash or its
file's sha1), was measured alike (the schema's resume columns: batch size, device, timing protocol, replicates of
the standard errors), and has every column the suite's metrics fill now (a cell from before a metric gained a
column, such as a standard error, is computed again), filled where it must be (solver_error of an ODE cell, left
empty when the model's reference solution failed). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from rfbench.results.store import ResultStore


@dataclass(frozen=True)
class Wanted:
    """What a stored cell must be to stand for the cell ``label`` of this run."""

    label: str
    key: str
    equal: dict = field(default_factory=dict)     # resume columns and the values this run will record
    filled: tuple[str, ...] = ()                  # columns that must hold a value (not one left empty by a failure)


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def finished_cells(store: ResultStore, wanted: Sequence[Wanted], columns: Sequence[str],
                   say: Callable[[str], None] = print) -> dict[str, str]:
    """Cell label -> stored key of every wanted cell the store already holds (see the module docstring). Whatever
    goes wrong while deciding (an unreadable folder) keeps nothing: every cell is then computed again."""
    try:
        done = {key: rec for key, rec in store.records().items() if rec.get("status") == "ok"}
    except Exception as exc:
        say(f"resume: could not read the finished cells ({type(exc).__name__}: {exc}); computing every cell")
        return {}
    found: dict[str, str] = {}
    for want in wanted:
        rec = done.get(want.key)
        if rec is None or not all(col in rec for col in columns):
            continue        # not there, or computed before a column existed
        if any(_empty(rec.get(col)) for col in want.filled):
            continue
        if all(rec.get(name) == value for name, value in want.equal.items()):
            found[want.label] = want.key
    return found

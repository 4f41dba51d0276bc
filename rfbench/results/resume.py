"""Resume: which cells already stored in a run's folder a rerun keeps instead of computing again.

A stored cell is kept when it finished (status ok), is the cell (its key computed again from the record's own key
columns, not taken from its file's name: suite version, samples, seeds, solver, steps, options, grid, extractor,
reference, and the model's identity: its recipe's hash or its file's sha1), was measured alike (the schema's resume
columns: batch size, device, timing protocol, replicates of the standard errors), and has every column the suite's
metrics fill now (a cell from before a metric gained a column, such as a standard error, is computed again), filled
where it must be (solver_error of an ODE cell, left empty when the model's reference solution failed).

A cell is kept only while its content matches the digest stored with it (:func:`rfbench.results.store.intact`): a
record edited since it was written (a metric changed by hand, its key columns left alone) is computed again, and so
is one without a digest (written before records carried one); the run says which.

A file under a wanted cell's name whose record is of another cell (copied from another suite version, edited,
renamed) is stale: the cell is computed again and, in a run (``set_aside``), the file is moved into
``cells/stale/`` with one line saying which columns differ. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from rfbench.results.schema import KEY_FIELDS, value_of
from rfbench.results.store import DIGEST, ResultStore, cell_key, intact


@dataclass(frozen=True)
class Wanted:
    """What a stored cell must be to stand for the cell ``label`` of this run. ``identity``: the key columns and the
    values this run writes (``key`` is :func:`cell_key` of them); ``own``: key columns a record holds its own value
    of (the independent row of an image suite records the held-out split's sample count, not the run's)."""

    label: str
    key: str
    equal: dict = field(default_factory=dict)     # resume columns and the values this run will record
    filled: tuple[str, ...] = ()                  # columns that must hold a value (not one left empty by a failure)
    identity: dict = field(default_factory=dict)
    own: tuple[str, ...] = ()

    @classmethod
    def of(cls, label: str, fields: dict, equal: dict | None = None, filled: tuple[str, ...] = (),
           own: tuple[str, ...] = ()) -> Wanted:
        """The wanted cell whose row will hold ``fields`` (the run's shared columns, the cell's, the model's id)."""
        return cls(label, cell_key(fields), dict(equal or {}), tuple(filled),
                   {col: fields.get(col) for col in KEY_FIELDS}, tuple(own))


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def recorded_key(record: dict, want: Wanted) -> str:
    """The key of the cell ``record`` holds, from its own key columns (``want.own`` taken as wanted)."""
    return cell_key({**record, **{col: want.identity.get(col) for col in want.own}})


def differences(record: dict, want: Wanted) -> list[str]:
    """The key columns in which ``record`` is not the wanted cell, as ``NAME RECORDED (this run: VALUE)``."""
    return [f"{col} {value_of(record, col)!r} (this run: {want.identity.get(col)!r})" for col in KEY_FIELDS
            if col in want.identity and col not in want.own
            and str(value_of(record, col)) != str(value_of(want.identity, col))]


def finished_cells(store: ResultStore, wanted: Sequence[Wanted], columns: Sequence[str],
                   say: Callable[[str], None] = print, set_aside: bool = False) -> dict[str, str]:
    """Cell label -> stored key of every wanted cell the store already holds (see the module docstring). A stale
    file at a wanted cell's name is said (``say``) and, with ``set_aside`` (a run, not a dry run), moved into
    ``cells/stale/``. Whatever goes wrong while deciding (an unreadable folder) keeps nothing: every cell is then
    computed again."""
    try:
        stored = store.records()
    except Exception as exc:
        say(f"resume: could not read the finished cells ({type(exc).__name__}: {exc}); computing every cell")
        return {}
    found: dict[str, str] = {}
    undigested: list[str] = []
    for want in wanted:
        rec = stored.get(want.key)
        if rec is None:
            continue
        if recorded_key(rec, want) != want.key:
            _stale(store, want, rec, say, set_aside)
            continue
        if rec.get("status") != "ok" or not all(col in rec for col in columns):
            continue        # failed, or computed before a column existed
        if any(_empty(rec.get(col)) for col in want.filled):
            continue
        if not all(rec.get(name) == value for name, value in want.equal.items()):
            continue
        if intact(rec):
            found[want.label] = want.key
        elif DIGEST in rec:
            say(f"resume: cells/{want.key}.json does not match the digest stored with it (its content changed since "
                f"it was written): {want.label} is recomputed")
        else:
            undigested.append(want.label)
    if undigested:
        shown = ", ".join(undigested[:3]) + (f" and {len(undigested) - 3} more" if len(undigested) > 3 else "")
        say(f"resume: {len(undigested)} stored cell(s) carry no digest of their content (written before rfbench "
            f"recorded one), so nothing shows they are unchanged: recomputed: {shown}")
    return found


def _stale(store: ResultStore, want: Wanted, record: dict, say: Callable[[str], None], set_aside: bool) -> None:
    """Say that ``cells/KEY.json`` records another cell, and (``set_aside``) move it into ``cells/stale/``."""
    name = f"cells/{want.key}.json"
    diffs = differences(record, want) or [f"key columns giving {recorded_key(record, want)}"]
    what = f"resume: {name} records {', '.join(diffs)}: {want.label} is recomputed"
    if not set_aside:
        say(what)
        return
    try:
        moved = store.set_aside(want.key)
    except OSError as exc:
        say(f"{what}; the old file could not be moved aside ({exc.strerror or exc}) and will be overwritten")
        return
    say(f"{what}; old file moved to {moved.relative_to(store.out_dir).as_posix()}")


def with_samples(store: ResultStore, kept: dict[str, str], exempt: Sequence[str] = ()) -> dict[str, str]:
    """The kept cells a run with ``--save-samples`` may keep: those whose samples (``cells/KEY.npz``) are saved, and
    the ``exempt`` labels (rows without samples); the others are sampled again, so that every cell of the folder
    has them."""
    return {label: key for label, key in kept.items()
            if label in exempt or (store.cells_dir / f"{key}.npz").is_file()}

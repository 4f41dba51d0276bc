"""The result store: one JSON file per finished cell, written atomically, loaded back as one DataFrame.

It knows nothing of torch: a record is a flat dict of numbers and strings.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rfbench.files import atomic_write, atomic_write_text
from rfbench.results.schema import INTEGER, KEY_FIELDS, at_default, table_columns


def cell_key(record: dict) -> str:
    """A file-name-safe key identifying a record's cell: the schema's key columns (suite, version, model, solver,
    steps, sample count, first seed, options, and for image suites the extractor and the reference, and the model's
    identity: a run scored another way, or of a changed model, is another cell)."""
    parts = [str(record.get(k)) for k in KEY_FIELDS if not at_default(record, k)]
    readable = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts[:5]))[:80]
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


STALE = "stale"     # cells/stale/: cell files a resumed run set aside (their record is of another cell); never read
SCORED = "samples file"     # how a row that ``rfbench score`` added begins its model_source: not a run's cell
DIGEST = "record_sha256"    # the field of a cell file holding record_digest of the rest of its record


def is_scored(row) -> bool:
    """Whether a record (or a table's row) is one that ``rfbench score`` added from samples made elsewhere, rather
    than a cell a run computed."""
    return str(row.get("model_source", "")).startswith(SCORED)


def record_digest(record: dict) -> str:
    """SHA-256 (hex) of a record's canonical JSON (sorted keys, no spaces), its :data:`DIGEST` field left out. JSON
    reads back the numbers it wrote exactly, so a record loaded from its file has the digest it was written with
    unless its content changed since."""
    body = {k: v for k, v in record.items() if k != DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def intact(record: dict) -> bool:
    """Whether a stored record still holds what was written: its :data:`DIGEST` matches its content (a record
    without one, written before records carried it, is not known to be intact)."""
    return record.get(DIGEST) == record_digest(record)


class StoreWriteError(OSError):
    """A cell (or its samples) could not be written: a full disk, a folder made read-only mid-run. The message
    says which file, why, how many finished cells are safe and how to resume; ``errno`` is the system's."""

    def __init__(self, store: "ResultStore", path: Path, exc: OSError):
        safe = len(list(store.cells_dir.glob("*.json"))) if store.cells_dir.is_dir() else 0
        reason = exc.strerror or str(exc)
        super().__init__(exc.errno, f"writing {path} failed: {reason}; the {safe} finished cell(s) before it are "
                                    f"safe in {store.cells_dir}; free space (or make the folder writable) and rerun "
                                    f"the same command: finished cells are kept, the rest are computed")
        self.path, self.safe = path, safe

    def __str__(self) -> str:
        return self.strerror


class ResultStore:
    """Cells under ``out_dir/cells/``; a finished cell is never lost when a later one fails or the run dies.
    ``metric_columns``: the metrics' columns, placed by :func:`rfbench.results.schema.table_columns`."""

    def __init__(self, out_dir: str | os.PathLike, metric_columns: Sequence[str] = ()):
        self.out_dir = Path(out_dir)
        self.cells_dir = self.out_dir / "cells"
        self.stale_dir = self.cells_dir / STALE
        self.metric_columns = tuple(metric_columns)

    def write(self, record: dict, key: str | None = None) -> Path:
        """Store one record as ``cells/KEY.json`` (default key: :func:`cell_key` of the record), with the
        :func:`record_digest` of its content (a resumed run keeps it only while the two agree)."""
        path = self.cells_dir / f"{key or cell_key(record)}.json"
        record = _clean({k: v for k, v in record.items() if k != DIGEST})
        text = json.dumps({**record, DIGEST: record_digest(record)}, indent=1, sort_keys=True, allow_nan=False)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise StoreWriteError(self, path, exc) from exc
        return path

    def write_samples(self, key: str, arrays: dict[str, np.ndarray]) -> Path:
        """``cells/KEY.npz`` beside the cell's record: its samples (``arr_0``, the layout clean-fid and ADM's
        evaluation read) and whatever else is given (``z0``, ``seeds``)."""
        path = self.cells_dir / f"{key}.npz"

        def write(fh):
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            fh.write(buffer.getvalue())

        try:
            return atomic_write(path, write)
        except OSError as exc:
            raise StoreWriteError(self, path, exc) from exc

    def set_aside(self, key: str) -> Path:
        """Move ``cells/KEY.json`` (and its samples, ``KEY.npz``) into ``cells/stale/``, never over a file already
        there (then ``KEY-2.json``, ``KEY-3.json``, ...): a record that is not the cell its name says is kept for
        a reader, and no longer read as a result. Returns where the record went."""
        self.stale_dir.mkdir(parents=True, exist_ok=True)
        stem, n = key, 1
        while any((self.stale_dir / f"{stem}{ext}").exists() for ext in (".json", ".npz")):
            n += 1
            stem = f"{key}-{n}"
        samples = self.cells_dir / f"{key}.npz"
        if samples.is_file():
            os.replace(samples, self.stale_dir / f"{stem}.npz")
        target = self.stale_dir / f"{stem}.json"
        os.replace(self.cells_dir / f"{key}.json", target)
        return target

    def records(self) -> dict[str, dict]:
        """Every stored record by its file's name (the cell key it was written under), from ``cells/*.json`` only
        (never ``cells/stale/``). A file that cannot be read (a disk full at write time, a hand edit) is left out
        with a warning: its cell is then computed again, never trusted."""
        out = {}
        for path in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.exists() else []:
            if not path.is_file():
                continue
            try:
                with open(path) as fh:
                    record = json.load(fh)
            except (OSError, ValueError) as exc:
                warnings.warn(f"ignoring unreadable result cell {path}: {exc}", stacklevel=2)
                continue
            if not isinstance(record, dict):
                warnings.warn(f"ignoring result cell {path}: not a JSON object", stacklevel=2)
                continue
            out[path.stem] = record
        return out

    def model_cells(self, scored: bool) -> dict[str, str]:
        """Model name -> the key of one stored record of that model that ``rfbench score`` added (``scored``) or
        that a run wrote (not ``scored``; the independent row left out)."""
        out: dict[str, str] = {}
        for key, record in self.records().items():
            if is_scored(record) == scored and record.get("model") not in (None, "independent"):
                out.setdefault(str(record["model"]), key)
        return out

    def load(self, suite: str | None = None, suite_version: int | None = None,
             keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Stored records as one DataFrame (without their digests), optionally only those of one suite and version,
        or with the given cell keys (then in the order of ``keys``; else in the order they were run)."""
        stored = self.records()
        if keys is not None:
            records = [stored[k] for k in keys if k in stored]
        else:
            records = sorted(stored.values(), key=lambda r: (str(r.get("date")), r.get("order", 0)))
        records = [r for r in records if (suite is None or r.get("suite") == suite)
                   and (suite_version is None or r.get("suite_version") == suite_version)]
        frame = pd.DataFrame.from_records(records)
        return typed(frame.drop(columns=[DIGEST], errors="ignore"), self.metric_columns)


def typed(frame: pd.DataFrame, metric_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The schema's integer columns as nullable integers (adaptive solvers have no steps), NFE too where every
    value is whole (an adaptive solver's batch mean need not be), and the schema's column order."""
    for col in INTEGER + ("nfe",):
        if col in frame:
            values = pd.to_numeric(frame[col], errors="coerce")
            if (values.dropna() % 1 == 0).all():
                frame[col] = values.astype("Int64")
    lead = [c for c in table_columns(metric_columns) if c in frame.columns]
    return frame[lead + [c for c in frame.columns if c not in lead]]


def _clean(record: dict) -> dict:
    """JSON-safe: NaN and inf become None (an empty cell), never a made-up number."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out

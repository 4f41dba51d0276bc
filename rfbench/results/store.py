"""The result store: one JSON file per finished cell, written atomically, loaded back as one DataFrame.

It knows nothing of torch: a record is a flat dict of numbers and strings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

# The leading columns of every table, in order; any further record keys follow.
COLUMNS = ("suite", "suite_version", "model", "solver", "steps", "nfe", "n_samples", "seed", "seeds",
           "wall_clock_s", "samples_per_s", "ms_per_nfe", "fid", "fid_se", "is", "is_se", "is_10", "is_10_std",
           "precision", "precision_se", "recall", "recall_se", "kid", "kid_se", "crossing_prob", "crossing_prob_se",
           "transport_cost", "transport_cost_se", "straightness", "straightness_se", "model_metrics_solver", "w2",
           "w2_se", "status", "error", "notes", "options", "batch_size", "bootstrap", "solver_stats", "timing",
           "extractor", "reference", "model_checkpoint", "device", "dtype",
           "torch_version", "rfbench_version", "python_version", "git_commit", "git_dirty", "date")
KEY_FIELDS = ("suite", "suite_version", "model", "solver", "steps", "options", "n_samples", "seed", "extractor",
              "reference")


def cell_key(record: dict) -> str:
    """A file-name-safe key identifying a record's cell (suite, version, model, solver, steps, options, seeds, and
    for image suites the extractor and the reference: a run scored another way is another cell)."""
    parts = [str(record.get(k)) for k in KEY_FIELDS]
    readable = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts[:5]))[:80]
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


class ResultStore:
    """Cells under ``out_dir/cells/``; a finished cell is never lost when a later one fails or the run dies."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.cells_dir = self.out_dir / "cells"

    def write(self, record: dict, key: str | None = None) -> Path:
        """Store one record as ``cells/KEY.json`` (default key: :func:`cell_key` of the record)."""
        path = self.cells_dir / f"{key or cell_key(record)}.json"
        atomic_write_text(path, json.dumps(_clean(record), indent=1, sort_keys=True, allow_nan=False))
        return path

    def records(self) -> dict[str, dict]:
        """Every stored record by its cell key. A file that cannot be read (a disk full at write time, a hand edit)
        is left out with a warning: its cell is then computed again, never trusted."""
        out = {}
        for path in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.exists() else []:
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

    def load(self, suite: str | None = None, suite_version: int | None = None,
             keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Stored records as one DataFrame, optionally only those of one suite and version, or with the given cell
        keys (then in the order of ``keys``; else in the order they were run)."""
        stored = self.records()
        if keys is not None:
            records = [stored[k] for k in keys if k in stored]
        else:
            records = sorted(stored.values(), key=lambda r: (str(r.get("date")), r.get("order", 0)))
        records = [r for r in records if (suite is None or r.get("suite") == suite)
                   and (suite_version is None or r.get("suite_version") == suite_version)]
        frame = pd.DataFrame.from_records(records)
        for col in ("steps", "nfe", "n_samples", "seed", "suite_version"):
            if col in frame:  # integers with empty cells (adaptive solvers have no steps)
                frame[col] = frame[col].astype("Int64")
        lead = [c for c in COLUMNS if c in frame.columns]
        return frame[lead + [c for c in frame.columns if c not in lead]]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write then rename: a reader (or a second run writing the same file) sees the old file or the new one,
    never a part; a crash leaves at most a hidden temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)     # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(record: dict) -> dict:
    """JSON-safe: NaN and inf become None (an empty cell), never a made-up number."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out

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
from pathlib import Path
from typing import Iterable

import pandas as pd

# The leading columns of every table, in order; any further record keys follow.
COLUMNS = ("suite", "suite_version", "model", "solver", "steps", "nfe", "n_samples", "seed", "seeds",
           "wall_clock_s", "samples_per_s", "ms_per_nfe", "fid", "is", "is_10", "is_10_std", "precision", "recall",
           "kid", "crossing_prob", "crossing_prob_se", "transport_cost", "straightness", "model_metrics_solver", "w2",
           "status", "error", "notes", "options", "solver_stats", "timing", "extractor", "reference",
           "model_checkpoint", "device", "dtype", "torch_version", "rfbench_version", "python_version", "git_commit",
           "git_dirty", "date")
KEY_FIELDS = ("suite", "suite_version", "model", "solver", "steps", "options", "n_samples", "seed")


def cell_key(record: dict) -> str:
    """A file-name-safe key identifying a record's cell (suite, version, model, solver, steps, options, seeds)."""
    parts = [str(record.get(k)) for k in KEY_FIELDS]
    readable = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts[:5]))[:80]
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


class ResultStore:
    """Cells under ``out_dir/cells/``; a finished cell is never lost when a later one fails or the run dies."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.cells_dir = self.out_dir / "cells"

    def write(self, record: dict) -> Path:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        path = self.cells_dir / f"{cell_key(record)}.json"
        blob = json.dumps(_clean(record), indent=1, sort_keys=True, allow_nan=False)
        fd, tmp = tempfile.mkstemp(prefix=".cell.", suffix=".tmp", dir=self.cells_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load(self, suite: str | None = None, suite_version: int | None = None,
             keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored records as a DataFrame in the order they were run, optionally only those of one suite and
        version, or with the given cell keys."""
        records = []
        wanted = None if keys is None else set(keys)
        for path in sorted(self.cells_dir.glob("*.json")) if self.cells_dir.exists() else []:
            if wanted is not None and path.stem not in wanted:
                continue
            with open(path) as fh:
                rec = json.load(fh)
            if suite is not None and rec.get("suite") != suite:
                continue
            if suite_version is not None and rec.get("suite_version") != suite_version:
                continue
            records.append(rec)
        records.sort(key=lambda r: r.get("order", 0))
        frame = pd.DataFrame.from_records(records)
        for col in ("steps", "nfe", "n_samples", "seed", "suite_version"):
            if col in frame:  # integers with empty cells (adaptive solvers have no steps)
                frame[col] = frame[col].astype("Int64")
        lead = [c for c in COLUMNS if c in frame.columns]
        return frame[lead + [c for c in frame.columns if c not in lead]]


def _clean(record: dict) -> dict:
    """JSON-safe: NaN and inf become None (an empty cell), never a made-up number."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out

"""Tables from result DataFrames: the full CSV and a readable Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from rfbench.files import atomic_write_text

DISPLAY_COLUMNS = ("model", "solver", "steps", "grid", "nfe", "fid", "is", "precision", "recall", "w2", "solver_error",
                   "crossing_prob", "crossing_prob_se", "transport_cost", "straightness", "wall_clock_s",
                   "samples_per_s", "ms_per_nfe", "status")
ALWAYS_SHOWN = ("model", "solver", "steps", "nfe", "status")


def markdown_table(frame: pd.DataFrame, columns: Sequence[str] = DISPLAY_COLUMNS) -> str:
    """A GitHub-flavoured Markdown table of the chosen columns (those present, leaving out metric columns that are
    empty in every row, such as crossing_prob on images); empty cells stay empty."""
    cols = [c for c in columns if c in frame.columns and (c in ALWAYS_SHOWN or frame[c].notna().any())
            and (c != "grid" or frame["grid"].dropna().astype(str).ne("uniform").any())]
    shown = frame[cols].copy()
    if "steps" in shown:  # adaptive solvers have no step count; the independent-coupling row has no sampler
        has_nfe = shown["nfe"].fillna(0) > 0 if "nfe" in shown else pd.Series(True, index=shown.index)
        shown["steps"] = [("adaptive" if ok else "") if pd.isna(s) else str(int(s))
                          for s, ok in zip(shown["steps"], has_nfe)]
    if "status" in shown:
        shown["status"] = shown["status"].map(lambda s: s if len(str(s)) <= 60 else str(s)[:57] + "...")
    shown = shown.astype(object).where(shown.notna(), None)  # NaN -> empty cell
    return tabulate(shown, headers="keys", tablefmt="github", floatfmt=".4g", showindex=False, missingval="")


def write_tables(frame: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` (every column) and ``results.md`` (the display columns) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    atomic_write_text(csv_path, frame.drop(columns=[c for c in ("order",) if c in frame.columns]).to_csv(index=False))
    title = ""
    if len(frame) and "suite" in frame:
        first = frame.iloc[0]
        title = (f"# {first['suite']} (version {first['suite_version']}), {first['n_samples']} samples, "
                 f"seeds {first['seeds']}, {first['device']}\n\n")
    atomic_write_text(md_path, title + markdown_table(frame) + "\n")
    return csv_path, md_path

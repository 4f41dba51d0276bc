"""Paper tables from result DataFrames: Markdown, LaTeX (booktabs, best value per column in bold) and CSV, laid out
like Table 1 of the rectified-flow paper (method, solver, NFE, IS, FID, precision, recall), plus the coupling
columns where a suite has them. Also the Pareto front of quality against cost.

Torch-free: which direction is better for a column comes from the caller (``rfbench.metrics.column_directions``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from rfbench.results.schema import CELL

FORMATS = ("markdown", "latex", "csv")
Z95 = 1.959963984540054        # the normal 97.5% quantile: value +- Z95 * standard error is a 95% interval
# Table 1's order, then the coupling and cost columns; only those with a value in some row are shown by default
TABLE_COLUMNS = ("model", "solver", "steps", "grid", "nfe", "is", "fid", "precision", "recall", "kid", "w2",
                 "solver_error", "transport_cost", "straightness", "crossing_prob", "samples_per_s", "ms_per_nfe")
KEY_COLUMNS = ("model", "solver", "steps", "nfe")
HEADERS = {"model": "Method", "solver": "Solver", "steps": "Steps", "grid": "Grid", "nfe": "NFE", "is": "IS",
           "fid": "FID", "precision": "Precision", "recall": "Recall", "kid": "KID", "w2": "W2",
           "transport_cost": "Transport cost", "straightness": "Straightness", "crossing_prob": "Crossing prob.",
           "solver_error": "Solver error",
           "samples_per_s": "Samples/s", "ms_per_nfe": "ms/NFE", "wall_clock_s": "Wall-clock (s)",
           "is_10": "IS (10 splits)"}
DIGITS = {"is": 2, "fid": 2, "precision": 2, "recall": 2, "kid": 4, "w2": 3, "transport_cost": 3, "straightness": 4,
          "crossing_prob": 3, "samples_per_s": 1, "ms_per_nfe": 2, "wall_clock_s": 2, "is_10": 2}
LATEX_HEADERS = {"w2": "$W_2$"}


def read_csv(path: str | Path, expected: str = "a results table written by rfbench") -> pd.DataFrame:
    """The CSV at ``path``, or one line (ValueError) naming the file, what is wrong with it and what was
    ``expected``: an empty file, a binary one, one that is not CSV, one that cannot be opened."""
    path = Path(path)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        why = "is empty"
    except UnicodeDecodeError as exc:
        why = f"is not a text CSV (byte {exc.start} is not UTF-8)"
    except pd.errors.ParserError as exc:
        why = f"is not a well-formed CSV ({_one_line(exc)})"
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or _one_line(exc)})"
    raise ValueError(f"{path} {why}; expected {expected}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_results(path: str | Path, say: Callable[[str], None] | None = None) -> pd.DataFrame:
    """A run's table: ``DIR/results.csv`` (what the run reported), else every cell under ``DIR/cells`` (one row per
    cell: see :func:`one_row_per_cell`; what was left out is said once, by ``say``, default stderr, and kept in
    ``frame.attrs["left_out"]``), or a CSV. Raises FileNotFoundError or ValueError, one line naming the path and
    what was expected."""
    from rfbench.results.store import ResultStore
    path = Path(path)
    expected = "an rfbench output folder (--out of a run: results.csv or cells/) or a results CSV"
    try:
        path.exists()
    except OSError as exc:      # a parent that may not be looked into
        raise ValueError(f"{path} cannot be reached: {exc.strerror or exc}; expected {expected}") from None
    if path.is_dir():
        if (path / "results.csv").is_file():
            path = path / "results.csv"
            frame = read_csv(path, "the results.csv an rfbench run writes")
        elif (path / "cells").is_dir():
            frame = ResultStore(path).load()
            if frame.empty:
                raise ValueError(f"{path / 'cells'} holds no result cell (cells/*.json) and {path} no results.csv: "
                                 f"no results yet; expected {expected}")
            frame, left_out = one_row_per_cell(frame)
            if left_out:
                frame.attrs["left_out"] = f"{path}: {left_out}"
                (say or _stderr)(frame.attrs["left_out"])
        else:
            raise FileNotFoundError(f"{path} holds neither results.csv nor cells/; expected {expected}")
    elif path.is_file():
        frame = read_csv(path)
    elif path.exists():
        raise ValueError(f"{path} is neither a folder nor a file; expected {expected}")
    else:
        raise FileNotFoundError(f"no results at {path}: pass an output folder (--out of a run) or a results CSV")
    missing = [c for c in ("model", "solver", "status") if c not in frame]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} column: not an rfbench results table (found the columns "
                         f"{_listed(frame.columns)})")
    if "steps" in frame:    # adaptive solvers leave it empty; the CSV reads floats
        steps = pd.to_numeric(frame["steps"], errors="coerce")
        bad = (steps.isna() & frame["steps"].notna()) | (steps.notna() & (steps.fillna(0) % 1 != 0))
        if bad.any():
            raise ValueError(f"{path}: column steps holds {shown(frame['steps'][bad].iloc[0])}; steps must be an "
                             f"integer, or empty for an adaptive solver")
        frame["steps"] = steps.astype("Int64")
    return frame


def _listed(columns, most: int = 8) -> str:
    names = [str(c) for c in columns][:most]
    more = len(columns) - len(names)
    return ", ".join(repr(n[:40]) for n in names) + (f" and {more} more" if more > 0 else "") if names else "none"


def shown(value) -> str:
    """A value read from a file as an error message quotes it: ``'abc'``, ``2.5``, ``an empty entry``."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "an empty entry"
    value = value.item() if isinstance(value, np.generic) else value
    return repr(" ".join(value.split())[:60]) if isinstance(value, str) else repr(value)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def one_row_per_cell(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per cell (suite, model, solver, steps, grid, options) of records read from a folder's cells: where
    several records are of one cell (copied from another suite version, of another sample count or model, a renamed
    file), only those of the highest suite version among them are kept, and of those the last written. Returns the
    rows kept (in their order) and, when some were left out, one line saying how many and why."""
    if frame.empty:
        return frame, ""
    cell = [c for c in ("suite", *CELL) if c in frame]
    names = frame[cell].astype("string").fillna("")
    if "grid" in names:     # as the gate reads a row without a grid (recorded before grids were): uniform
        names["grid"] = names["grid"].replace("", "uniform")
    keys = names.agg("\x00".join, axis=1) if cell else pd.Series("", frame.index)
    version = pd.to_numeric(frame.get("suite_version", pd.Series(np.nan, frame.index)), errors="coerce")
    version = version.astype(float).fillna(-np.inf)          # a record without a version is the oldest
    older = version < version.groupby(keys).transform("max")
    again = keys[~older].duplicated(keep="last")             # the same cell again in its newest version
    kept = frame[~older][~again.to_numpy()]
    if len(kept) == len(frame):
        return frame, ""
    parts = [f"{int(older.sum())} of an older suite version than another record of the same cell"] \
        if older.any() else []
    parts += [f"{int(again.sum())} written before another record of the same cell"] if again.any() else []
    return kept, (f"{len(frame) - len(kept)} cell record(s) under cells/ left out of the table ({'; '.join(parts)}); "
                  f"one row per cell: the newest suite version, the last written")


def table_columns(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> list[str]:
    """The chosen columns in the given order (unknown ones are an error), or the default: Table 1's layout,
    leaving out metric columns that are empty in every row."""
    if columns:
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise ValueError(f"no column {', '.join(map(repr, unknown))} in these results; columns: "
                             f"{', '.join(frame.columns)}")
        return list(columns)
    return [c for c in TABLE_COLUMNS if c in frame.columns and (c in KEY_COLUMNS or frame[c].notna().any())
            and (c != "grid" or varied_grids(frame))]


def varied_grids(frame: pd.DataFrame) -> bool:
    """Whether a table needs its grid column: some cell is on another grid than uniform."""
    return "grid" in frame and bool(frame["grid"].dropna().astype(str).ne("uniform").any())


COSTS = ("nfe", "wall_clock_s", "samples_per_s", "ms_per_nfe")    # budgets, not results: never bold


def best_rows(frame: pd.DataFrame, column: str, directions: dict[str, str]) -> set:
    """Index labels of the rows holding the best value of quality ``column`` among sampled rows (the independent
    row is real data, not a method, and never counts; cost columns are the budget, not a result)."""
    direction = directions.get(column)
    if direction is None or column not in frame or column in COSTS:
        return set()
    values = pd.to_numeric(frame[column], errors="coerce")
    values = values[(frame["model"] != "independent") & values.notna()]
    if values.empty:
        return set()
    target = values.max() if direction == "higher" else values.min()
    return set(values.index[np.isclose(values, target, rtol=1e-12, atol=0)])


def _text(value, column: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if column == "steps":
        return str(int(value))
    if column == "nfe":
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.{DIGITS[column]}f}" if column in DIGITS else f"{value:.4g}"
    return str(value)


def _cells(frame: pd.DataFrame, columns: list[str], intervals: bool) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        texts = [_text(v, col) for v in frame[col]]
        se = f"{col}_se"
        if intervals and se in frame:    # a 95% normal interval of a mean over independent seeds
            texts = [t if not t or pd.isna(h) else f"{t} ± {_text(Z95 * float(h), col)}"
                     for t, h in zip(texts, frame[se])]
        out[col] = texts
    if "steps" in columns:   # adaptive solvers have no step count; the independent row has no sampler
        out["steps"] = [("adaptive" if s == "" and m != "independent" else s)
                        for s, m in zip(out["steps"], frame["model"])]
    return out


def render_table(frame: pd.DataFrame, fmt: str = "markdown", columns: Sequence[str] | None = None,
                 directions: dict[str, str] | None = None, intervals: bool = False,
                 include_failed: bool = False, methods: dict[str, str] | None = None) -> str:
    """The results as a paper table. ``fmt``: markdown, latex (booktabs; the best value of each column in bold)
    or csv (full precision). Failed cells are left out unless ``include_failed``. ``intervals``: show
    ``value ± 1.96 standard errors`` (95%, normal) where a ``COLUMN_se`` column holds one, and below the table
    (a LaTeX comment there) how each shown interval was estimated: ``methods`` maps ``COLUMN_se`` to that
    (``rfbench.metrics.interval_methods``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    directions = directions or {}
    if "status" in frame and not include_failed:
        frame = frame[frame["status"] == "ok"]
    frame = frame.reset_index(drop=True)
    columns = table_columns(frame, columns)
    if fmt == "csv":
        return frame[columns].to_csv(index=False)
    cells = _cells(frame, columns, intervals)
    if fmt == "markdown":
        headers = [HEADERS.get(c, c) for c in columns]
        table = tabulate(cells.values.tolist(), headers=headers, tablefmt="github", disable_numparse=True)
        note = _interval_note(frame, columns, methods or {}) if intervals else []
        return table + ("\n\n" + "\n".join(note) if note else "")
    for col in columns:          # LaTeX: escape, then bold the best value of each directed column
        best = best_rows(frame, col, directions)
        cells[col] = [rf"\textbf{{{_latex(t)}}}" if i in best and t else _latex(t)
                      for i, t in zip(cells.index, cells[col])]
    align = "".join("l" if c in ("model", "solver") else "r" for c in columns)
    head = " & ".join(LATEX_HEADERS.get(c, _latex(HEADERS.get(c, c))) for c in columns)
    body = "\n".join(" & ".join(row) + r" \\" for row in cells.values.tolist())
    note = "".join(f"% {line}\n" for line in _interval_note(frame, columns, methods or {})) if intervals else ""
    return (f"\\begin{{tabular}}{{{align}}}\n\\toprule\n{head} \\\\\n\\midrule\n{body}\n\\bottomrule\n"
            f"\\end{{tabular}}\n{note}")


def _interval_note(frame: pd.DataFrame, columns: list[str], methods: dict[str, str]) -> list[str]:
    """Lines saying what the ± means and, for each shown column with an interval, how its error was estimated."""
    shown = [c for c in columns if f"{c}_se" in frame and frame[f"{c}_se"].notna().any()]
    if not shown:
        return []
    return ["± is 1.96 standard errors (a 95% normal interval):"] + [
        f"- {HEADERS.get(c, c)}: {methods.get(f'{c}_se', 'standard error as recorded')}" for c in shown]


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def _latex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)     # one pass: no escape is escaped again


def pareto_front(cost: Sequence[float], quality: Sequence[float], lower_is_better: bool = True) -> np.ndarray:
    """Boolean mask of the points no other point beats: one with cost <= and quality at least as good, and strictly
    better in one of them. Points with a missing value are never on the front."""
    cost = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float) * (1 if lower_is_better else -1)
    valid = np.isfinite(cost) & np.isfinite(q)
    front = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid & (cost <= cost[i]) & (q <= q[i]) & ((cost < cost[i]) | (q < q[i]))
        front[i] = not others.any()
    return front


def best_within_budgets(frame: pd.DataFrame, metric: str, direction: str,
                        budgets: Sequence[float] | None = None) -> pd.DataFrame:
    """Which solver wins at each budget: for each model and each NFE budget B, the finished cell with nfe <= B that
    has the best ``metric`` (``direction`` "lower" or "higher"), and the runner-up, so a reader can judge the lead
    against the standard errors. ``budgets`` default to the NFE values of the table's cells. The independent row
    and cells without the metric are left out. One row per (budget, model) that has a cell within the budget."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    if metric not in frame or not pd.to_numeric(frame[metric], errors="coerce").notna().any():
        present = [c for c in frame.columns if pd.to_numeric(frame[c], errors="coerce").notna().any()
                   and not c.endswith("_se")]
        raise ValueError(f"no values of {metric!r} in these results to rank by; columns with values: "
                         f"{_listed(present)}")
    rows = frame[frame["model"] != "independent"]
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    value = pd.to_numeric(rows[metric], errors="coerce")
    nfe = pd.to_numeric(rows["nfe"], errors="coerce")
    rows = rows[value.notna() & nfe.notna()].assign(_value=value, _nfe=nfe)
    if budgets is None:
        budgets = sorted(set(rows["_nfe"]))
    bad = [b for b in budgets if not (isinstance(b, (int, float)) and np.isfinite(b) and b > 0)]
    if bad:
        raise ValueError(f"a budget is a number of function evaluations > 0, got {bad[0]!r}")
    se = f"{metric}_se"
    out = []
    for budget in budgets:
        for model, group in rows[rows["_nfe"] <= budget].groupby("model", sort=False):
            ranked = group.sort_values("_value", ascending=direction == "lower", kind="stable")
            best = ranked.iloc[0]
            second = ranked.iloc[1] if len(ranked) > 1 else None
            out.append({"budget": budget, "model": model, "solver": best["solver"], "grid": best.get("grid"),
                        "steps": best.get("steps"), "nfe": best["_nfe"], metric: best["_value"],
                        se: best.get(se, np.nan),
                        "runner_up": _cell_name(second) if second is not None else "",
                        f"runner_up_{metric}": second["_value"] if second is not None else np.nan,
                        "cells": len(group)})
    return pd.DataFrame(out)


def _cell_name(row: pd.Series) -> str:
    steps = row.get("steps")
    steps = "" if steps is None or pd.isna(steps) or steps == "" else f" {int(float(steps))}"
    grid = row.get("grid")
    grid = "" if grid is None or pd.isna(grid) or grid in ("", "uniform") else f" ({grid})"
    return f"{row['solver']}{steps}{grid}"


def render_budgets(table: pd.DataFrame, metric: str, fmt: str = "markdown") -> str:
    """:func:`best_within_budgets` as a table: budget, model, the winning cell with its NFE and value (± its standard
    error where recorded), the runner-up with its value, and how many cells were within the budget."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    se = f"{metric}_se"
    lines = []
    for _, row in table.iterrows():
        value = f"{row[metric]:.4g}" + (f" ± {row[se]:.2g}" if pd.notna(row.get(se)) else "")
        runner = (f"{row['runner_up']}: {row[f'runner_up_{metric}']:.4g}" if row["runner_up"] else "")
        lines.append([f"{row['budget']:g}", row["model"], _cell_name(row), f"{row['nfe']:g}", value, runner,
                      str(row["cells"])])
    headers = ["NFE budget", "Method", "Best cell", "NFE", HEADERS.get(metric, metric), "Runner-up", "Cells"]
    if fmt == "markdown":
        return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    body = "\n".join(" & ".join(_latex(t) for t in line) + r" \\" for line in lines)
    return (f"\\begin{{tabular}}{{rllrrlr}}\n\\toprule\n{' & '.join(_latex(h) for h in headers)} \\\\\n\\midrule\n"
            f"{body}\n\\bottomrule\n\\end{{tabular}}\n")

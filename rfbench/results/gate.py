"""The regression gate: compare a run with a recorded baseline, cell by cell, and say what got worse.

``python benchmark.py --suite toy2d --check results/toy2d.csv --fail-on w2:+10% --fail-on nfe:+0``

A tolerance ``METRIC:+X`` allows the metric to get worse by X (absolute) or X% (relative to the baseline value)
and no more; which way is worse comes from the metric's registry entry (``rfbench.metrics.column_directions``).
Without ``--fail-on`` the tolerances come from the spread recorded beside the baseline (:func:`spread_table`;
``results/toy2d-spread.csv`` for ``results/toy2d.csv``): each cell's metric may get worse by ``K_SIGMA`` standard
deviations of its value over the recorded runs, and never less than ``ROUNDOFF`` of the baseline value.

The spread measures one of two nuisances (its ``nuisance`` column):

* ``retrain``: runs with the baseline's seeds whose models were trained again from an empty cache with another
  thread count or other CPU kernels (``ATEN_CPU_CAPABILITY``). That is what a same-seed gate must tolerate: the
  same code gives bit-identical numbers, and retraining moves them only by round-off amplified through training.
  These tolerances also get a relative floor, ``RETRAIN_FLOOR`` of the baseline value, since a few retrains
  measure a small spread roughly; a 10% regression still fails.
* ``seeds``: runs that differ only in their seeds (``--first-seed``): sampling noise, far wider (on toy2d, 40% of
  w2), for a gate between runs that do not share their seeds.

Torch-free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rfbench.results.report import shown
from rfbench.results.schema import CELL, DEFAULTS, MODEL_IDENTITY, RUN_IDENTITY, record_steps

# a run must match the baseline in these, or the comparison means nothing (and, per model, in MODEL_IDENTITY)
IDENTITY = RUN_IDENTITY
K_SIGMA = 3.0
# a metric that does not move with the seeds (a held-out row, a fixed grid's NFE) still differs between runs by
# float round-off (measured: 1e-6 on a digits FID of 13.4): default tolerances are never below this share of the value
ROUNDOFF = 1e-5
# a retrain spread's tolerances are never below this share of the baseline value. On toy2d, retraining from empty
# caches on 1 or 2 threads with AVX-512 or AVX2 kernels gave bit-identical tables; with ATen's default kernels every
# model cell moved, by at most 0.011% in w2, 0.08% in energy, 0.41% in crossing_prob and 1.24% in solver_error (1-RF's
# rk45, whose adaptive steps amplify round-off). 3% is 2.4x the largest, and a 10% regression still fails
RETRAIN_FLOOR = 0.03
NUISANCES = ("retrain", "seeds")
SPREAD_SUFFIX = "-spread.csv"


class GateMismatch(ValueError):
    """The run and the baseline are not comparable (suite version, samples, seeds, extractor or reference, or a
    model's identity: its recipe or file)."""


@dataclass(frozen=True)
class Tolerance:
    metric: str
    amount: float
    relative: bool

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.amount / 100 if self.relative else self.amount

    def __str__(self) -> str:
        return f"+{self.amount:g}%" if self.relative else f"+{self.amount:g}"


def parse_tolerance(spec: str, directions: dict[str, str]) -> Tolerance:
    """``w2:+10%`` (relative), ``fid:+0.5`` (absolute), ``nfe:+0`` (no worsening at all)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*:\s*\+?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*", spec)
    if not match:
        raise ValueError(f"--fail-on takes METRIC:+AMOUNT or METRIC:+PERCENT%, e.g. w2:+10% or nfe:+0; got {spec!r}")
    metric, amount, percent = match.groups()
    if metric not in directions:
        raise ValueError(f"--fail-on {spec}: {metric!r} has no better direction; gateable columns: "
                         f"{', '.join(sorted(directions))}")
    return Tolerance(metric, float(amount), bool(percent))


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _key(row) -> tuple:
    """The cell a row is (the schema's CELL columns: model, solver, steps, options, grid). A row without a grid
    (an adaptive solver, or a table from before grids were recorded, when every grid was uniform) is uniform."""
    assert CELL == ("model", "solver", "steps", "grid", "options")
    steps = record_steps(row)
    options = "" if _missing(row.get("options")) else str(row.get("options"))
    grid = "uniform" if _missing(row.get("grid")) else str(row.get("grid"))
    return (str(row["model"]), str(row["solver"]), steps, options, grid)


def _identity(frame: pd.DataFrame, name: str) -> dict:
    out = {}
    for col in IDENTITY:
        values = frame[col].dropna().astype(str).unique() if col in frame else []
        if col in ("n_samples", "seeds"):      # the independent row of an image suite may hold fewer (held-out),
            sampled = frame[frame["model"] != "independent"] if "model" in frame else frame   # and samples scored
            if "seed" in sampled:                                       # from a file (rfbench score) have no seeds
                sampled = sampled[sampled["seed"].notna()]
            values = sampled[col].dropna().astype(str).unique() if col in sampled else []
        if len(values) > 1:
            raise GateMismatch(f"{name} mixes several {col} values ({', '.join(values)}); compare one run at a time")
        out[col] = values[0] if len(values) else DEFAULTS.get(col)   # a table from before the column: its default
    return out


def model_identities(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Model -> its identity columns (model_id) as recorded; models whose rows disagree are an error."""
    out: dict[str, dict[str, str]] = {}
    for col in MODEL_IDENTITY:
        if col not in frame or "model" not in frame:
            continue
        for model, values in frame.dropna(subset=[col]).groupby("model")[col]:
            distinct = values.astype(str).unique()
            if len(distinct) > 1:
                raise GateMismatch(f"model {model} has several {col} values ({', '.join(distinct)}); compare one run "
                                   f"at a time")
            out.setdefault(str(model), {})[col] = distinct[0]
    return out


def check_models(run: dict[str, dict[str, str]], baseline: pd.DataFrame) -> None:
    """Raise :class:`GateMismatch` naming every model whose identity (its recipe's hash, its file's sha1) differs
    from the baseline's: a changed model is not a regression of the same one. A baseline recorded before models
    had identities is not checked."""
    recorded = model_identities(baseline)
    diffs = [f"model {model} {col}: baseline {recorded[model][col]!r}, run {value!r}"
             for model, cols in run.items() for col, value in cols.items()
             if model in recorded and col in recorded[model] and recorded[model][col] != value]
    if diffs:
        raise GateMismatch("the run is not comparable with the baseline (" + "; ".join(diffs) + "); a changed model "
                           "(its recipe, file or weights) needs a new baseline")


def check_comparable(run: pd.DataFrame, baseline: pd.DataFrame) -> None:
    """Raise :class:`GateMismatch` naming every identity field on which the two differ."""
    a, b = _identity(run, "the run"), _identity(baseline, "the baseline")
    diffs = [f"{col}: baseline {b[col]!r}, run {a[col]!r}" for col in IDENTITY if a[col] != b[col]]
    if diffs:
        raise GateMismatch("the run is not comparable with the baseline (" + "; ".join(diffs) + ")")
    check_models(model_identities(run), baseline)


@dataclass
class GateResult:
    failures: list[str]
    checked: int
    skipped: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def compare(run: pd.DataFrame, baseline: pd.DataFrame, directions: dict[str, str],
            tolerances: Sequence[Tolerance] = (), spread: pd.DataFrame | None = None,
            k_sigma: float = K_SIGMA) -> GateResult:
    """Each baseline cell's gated metrics against the run's. Explicit ``tolerances`` gate their metrics; without
    them every metric of ``spread`` is gated at ``k_sigma`` of its per-cell standard deviation (over retrains, never
    below ``RETRAIN_FLOOR`` of the baseline value, or over seeds).
    A baseline cell that failed in the run is a failure; one the run did not compute is skipped (and listed)."""
    check_comparable(run, baseline)
    if not tolerances and spread is None:
        raise ValueError("no tolerances: pass --fail-on METRIC:+AMOUNT, or record the spread beside the "
                         "baseline (rfbench spread)")
    runs = {_key(r): r for r in run.to_dict("records")}
    sd, floors = {}, {}
    if spread is not None and not tolerances:
        spread = check_spread(spread, baseline, directions)
        for r in spread.to_dict("records"):
            sd[(*_key(r), r["metric"])] = float(r["sd"])
            floors[(*_key(r), r["metric"])] = RETRAIN_FLOOR if r.get("nuisance", "seeds") == "retrain" else 0.0
    failures, skipped, checked = [], [], 0
    for base in baseline.to_dict("records"):
        key = _key(base)
        label = "/".join("adaptive" if (k is None and i == 2) else str(k) for i, k in enumerate(key[:4]) if k != "")
        label += f"@{key[4]}" if key[4] != "uniform" else ""
        if base.get("status", "ok") != "ok":
            continue
        new = runs.get(key)
        if new is None:
            skipped.append(label)
            continue
        if new.get("status", "ok") != "ok":
            failures.append(f"{label}: failed in this run ({new.get('error')}); the baseline cell is ok")
            continue
        gates = ([(t.metric, t.allowed(_num(base.get(t.metric))), str(t)) for t in tolerances
                  if not np.isnan(_num(base.get(t.metric)))] if tolerances else
                 [(m, *_spread_tolerance(s, floors[(*ck, m)], _num(base.get(m)), k_sigma))
                  for (*ck, m), s in sd.items() if tuple(ck) == key])
        for metric, allowed, told in gates:
            old, value = _num(base.get(metric)), _num(new.get(metric))
            if np.isnan(old):
                continue
            checked += 1
            if np.isnan(value):
                failures.append(f"{label} {metric}: baseline {old:.6g}, run has no value (tolerance {told})")
                continue
            worse = value - old if directions[metric] == "lower" else old - value
            if worse > allowed + 1e-12 * max(1.0, abs(old)):
                failures.append(f"{label} {metric}: baseline {old:.6g}, new {value:.6g} (worse by {worse:.4g}; "
                                f"tolerance {told})")
    if checked == 0:
        failures.append("nothing was compared: no baseline cell of this run has a value for the gated metric(s) "
                        f"{', '.join(sorted({t.metric for t in tolerances} or {k[-1] for k in sd}))}")
    return GateResult(failures, checked, skipped)


def _spread_tolerance(sd: float, floor: float, baseline: float, k_sigma: float) -> tuple[float, str]:
    """How much worse a metric may get (k_sigma sd, never below the floor's and ROUNDOFF's share of the baseline)
    and how the message says it."""
    allowed = max(k_sigma * sd, floor * abs(baseline), ROUNDOFF * abs(baseline))
    if floor and floor * abs(baseline) >= k_sigma * sd:
        return allowed, f"the retrain floor {100 * floor:g}% = {allowed:.4g}"
    return allowed, f"{k_sigma:g} sd = {k_sigma * sd:.4g}"


SPREAD_COLUMNS = ("suite", "suite_version", "n_samples", "model", "solver", "steps", "options", "metric", "sd")
# (a spread file may also have "grid"; one without it is of uniform grids; and "nuisance", one of NUISANCES; one
# without it measured the seeds)


# the numeric columns of a spread file: (column, integer, may be empty, lowest value, what is allowed)
SPREAD_NUMBERS = (("suite_version", True, False, None, "an integer"), ("n_samples", True, False, 1, "an integer >= 1"),
                  ("steps", True, True, 0, "an integer >= 0, or empty for an adaptive solver"),
                  ("sd", False, False, 0, "a number >= 0"), ("mean", False, True, None, "a number"),
                  ("runs", True, True, 2, "an integer >= 2"))


def check_spread(spread: pd.DataFrame, baseline: pd.DataFrame, directions: dict[str, str]) -> pd.DataFrame:
    """A spread file must have its columns, numbers where they are numeric (a standard deviation >= 0), be of the
    baseline's suite, version and sample count, and name only metrics that still have a direction. Returns it with
    its numeric columns as numbers; raises :class:`GateMismatch` (a ValueError) with one line saying what is
    wrong (and on which line of the file)."""
    missing = [c for c in SPREAD_COLUMNS if c not in spread]
    if missing:
        raise GateMismatch(f"the spread file lacks the column(s) {', '.join(missing)}; record it again with "
                           f"rfbench spread")
    spread = spread.reset_index(drop=True)
    for col, integer, optional, lowest, allowed in SPREAD_NUMBERS:
        if col in spread:
            spread[col] = _numbers(spread[col], col, integer, optional, lowest, allowed)
    want = _identity(baseline, "the baseline")
    for col in ("suite", "suite_version", "n_samples"):
        have = spread[col].dropna().astype(str).unique()
        if list(have) != [want[col]]:
            raise GateMismatch(f"the spread file is for {col} {', '.join(have)}, the baseline for {want[col]}; "
                               f"record the spread again")
    if "nuisance" in spread:
        bad = spread["nuisance"][~spread["nuisance"].isin(NUISANCES)]
        if len(bad):
            raise GateMismatch(f"line {int(bad.index[0]) + 2}: column nuisance holds {shown(bad.iloc[0])}; it must be "
                               f"one of {', '.join(NUISANCES)} (record the spread again with rfbench spread)")
    unknown = sorted(set(spread["metric"]) - set(directions))
    if unknown:
        raise GateMismatch(f"the spread file names metric(s) without a direction: {', '.join(map(str, unknown))}")
    return spread


def _numbers(values: pd.Series, col: str, integer: bool, optional: bool, lowest: float | None,
             allowed: str) -> pd.Series:
    """``values`` (a spread file's column, numbered from 0) as numbers, nullable integers where ``integer``, or
    GateMismatch naming the first bad entry and its line in the file (the header is line 1)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    bad = (numbers.isna() & values.notna()) | numbers.isin([np.inf, -np.inf])
    if integer:
        bad |= numbers.notna() & (numbers % 1 != 0)
    if lowest is not None:
        bad |= numbers < lowest
    if not optional:
        bad |= values.isna()
    if bad.any():
        where = int(bad.to_numpy().nonzero()[0][0])
        raise GateMismatch(f"line {where + 2}: column {col} holds {shown(values.iloc[where])}; {col} must be "
                           f"{allowed} (record the spread again with rfbench spread)")
    return numbers.astype("Int64") if integer else numbers


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def spread_table(frames: Sequence[pd.DataFrame], directions: dict[str, str], nuisance: str = "seeds") -> pd.DataFrame:
    """Per cell and metric: the mean, standard deviation (ddof=1) and number of runs, over runs of one suite that
    differ only in the ``nuisance``: their seeds (``--first-seed``), or, with ``"retrain"``, how their models were
    trained (the same seeds; each run from an empty cache on another thread count or with other CPU kernels, which
    the rows' ``threads`` and ``cpu_kernels`` must show). Every metric column with a direction is measured, NFE
    included (fixed-grid solvers have sd 0: any change fails)."""
    if nuisance not in NUISANCES:
        raise ValueError(f"nuisance must be one of {', '.join(NUISANCES)}, got {nuisance!r}")
    if len(frames) < 2:
        raise ValueError(f"the spread needs at least 2 runs, got {len(frames)}")
    for frame in frames:
        if "model" not in frame or "status" not in frame:
            raise ValueError("a run's table lacks the model or status column: not an rfbench results table")
    seeds = [tuple(f["seeds"].dropna().astype(str).unique()) for f in frames]
    if nuisance == "seeds" and len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs must use different seeds (--first-seed); got {seeds}")
    if nuisance == "retrain":
        if len(set(seeds)) != 1:
            raise ValueError(f"a retrain spread needs runs of the same seeds; got {seeds} (runs of other seeds: "
                             f"--nuisance seeds)")
        setups = [_setup(f) for f in frames]
        if len(set(setups)) < 2:
            raise ValueError(f"the runs were all made alike ({setups[0]}); a retrain spread needs runs trained on "
                             f"other thread counts (--threads) or CPU kernels (ATEN_CPU_CAPABILITY)")
    for other in frames[1:]:       # same suite, version, samples, extractor, reference; seeds may differ
        a, b = _identity(frames[0], "run 1"), _identity(other, "another run")
        diffs = [c for c in IDENTITY if c != "seeds" and a[c] != b[c]]
        if diffs:
            raise GateMismatch(f"the runs differ in {', '.join(diffs)}; the spread needs runs of one configuration")
    gated = [c for c in directions if c in frames[0] and c not in ("wall_clock_s", "samples_per_s", "ms_per_nfe")]
    values: dict[tuple, list[float]] = {}
    for frame in frames:
        for row in frame[frame["status"] == "ok"].to_dict("records"):
            for metric in gated:
                v = _num(row.get(metric))
                if not np.isnan(v):
                    values.setdefault((*_key(row), metric), []).append(v)
    ident = _identity(frames[0], "run 1")
    rows = [{"suite": ident["suite"], "suite_version": ident["suite_version"], "n_samples": ident["n_samples"],
             "model": k[0], "solver": k[1], "steps": k[2], "options": k[3], "grid": k[4], "metric": k[5],
             "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "runs": len(v), "nuisance": nuisance}
            for k, v in values.items() if len(v) == len(frames)]
    if not rows:
        raise ValueError("no cell has a value in every run (all failed, or the runs have no cells in common)")
    out = pd.DataFrame(rows)
    out["steps"] = out["steps"].astype("Int64")
    return out


def _setup(frame: pd.DataFrame) -> str:
    """How a run's models were trained, as far as its rows say: thread count and CPU kernels."""
    text = lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)   # noqa: E731
    parts = [f"{col} {', '.join(sorted({text(v) for v in frame[col].dropna()})) or '?'}"
             for col in ("threads", "cpu_kernels") if col in frame]
    return "; ".join(parts) or "no threads or cpu_kernels columns"


def spread_path(baseline: str | Path) -> Path:
    baseline = Path(baseline)
    return baseline.with_name(baseline.stem + SPREAD_SUFFIX)

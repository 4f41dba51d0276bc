"""Paired comparisons of two cells of one run: ``rfbench compare RUN --a MODEL/SOLVER/STEPS --b ...``.

Every cell of a suite starts from the same x0 (the same seeds), so two cells are paired samples: the difference of
a metric between them has a far smaller standard error than the two marginal errors suggest, and reporting the two
numbers with their own errors hides differences that are plainly resolved. From the cells' saved samples
(``--save-samples``) this computes, per metric, the difference a - b and its paired standard error:

* ``transport_cost``: the mean over seeds of ||Z1_a - Z0||^2 - ||Z1_b - Z0||^2, se = sd / sqrt(N);
* ``crossing_prob``: the same draws of two pairs (i, j) for both couplings, the mean of the per-draw difference
  of the crossing indicators (100,000 draws by default), se that of an incomplete U-statistic
  (:func:`pair_draws_se`: the samples' share, which the binomial error leaves out, and the draws');
* ``w2``: both against the suite's held-out reference; W2^2 is, to first order, the mean of the optimal dual
  potential u over the samples (:func:`rfbench.metrics.distances.w2_duals`), so by the delta method
  W2_a - W2_b has se = sd(u_a / (2 W2_a) - u_b / (2 W2_b)) / sqrt(N) over the paired seeds;
* ``energy``: both against the suite's held-out reference; the two-sample delete-one jackknife of the difference,
  leaving out one seed from both cells at once (and one reference point from both).

A difference is *resolved* when it is at least 3 standard errors from zero. ``independent`` names the suite's
independent coupling (X0 and X1 drawn separately), rebuilt from the seeds. The image metrics (FID, IS,
precision/recall) are not compared yet: their paired errors need a bootstrap of both cells' features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rfbench.metrics import column_directions
from rfbench.metrics.coupling import draw_pairs, pair_draws_se, segments_intersect
from rfbench.metrics.distances import energy_terms, jackknife_se, w2_duals
from rfbench.results import ResultStore
from rfbench.results.schema import record_steps
from rfbench.suites.base import SUITES
from rfbench.suites.score import read_samples

RESOLVED_SE = 3.0                 # |difference| / se at which a difference counts as resolved
DRAWS = 100_000                   # crossing draws: beyond this the samples' share of the error dominates
COMPARED = ("w2", "energy", "transport_cost", "crossing_prob")


@dataclass(frozen=True)
class Coupling:
    """One side of a comparison: its label, source points and samples, and the seeds they came from."""

    label: str
    z0: torch.Tensor
    z1: torch.Tensor
    seeds: np.ndarray


def parse_cell(spec: str) -> dict:
    """``MODEL/SOLVER/STEPS[/GRID]``, ``MODEL/SOLVER`` (adaptive) or ``independent`` -> the columns to match."""
    parts = spec.split("/")
    if spec == "independent":
        return {"model": "independent"}
    if len(parts) < 2 or len(parts) > 4 or not all(parts[:2]):
        raise ValueError(f"a cell is MODEL/SOLVER/STEPS[/GRID] (e.g. 1-rf/euler/4), MODEL/SOLVER for an adaptive "
                         f"solver (1-rf/rk45) or independent; got {spec!r}")
    cell: dict = {"model": parts[0], "solver": parts[1]}
    if len(parts) >= 3 and parts[2]:
        try:
            cell["steps"] = int(parts[2])
        except ValueError:
            raise ValueError(f"{spec}: STEPS must be an integer, got {parts[2]!r}") from None
    if len(parts) == 4:
        cell["grid"] = parts[3]
    return cell


def find_cell(store: ResultStore, spec: str) -> tuple[str, dict]:
    """The stored (key, record) of the finished cell ``spec`` names; one line naming what is there otherwise."""
    want = parse_cell(spec)
    records = {k: r for k, r in store.records().items() if r.get("status") == "ok"}
    if not records:
        raise ValueError(f"{store.cells_dir}: no finished cells (the --out folder of a run)")

    def matches(rec: dict) -> bool:
        if rec.get("model") != want["model"] or ("solver" in want and rec.get("solver") != want["solver"]):
            return False
        if record_steps(rec) != want.get("steps"):
            return False
        return "grid" not in want or rec.get("grid") == want["grid"]
    found = [(k, r) for k, r in records.items() if matches(r)]
    if not found:
        labels = sorted({_label(r) for r in records.values()})
        raise ValueError(f"{spec}: no finished cell of that name in {store.out_dir}; it has: "
                         f"{', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}")
    if len(found) > 1:
        raise ValueError(f"{spec} names {len(found)} cells ({', '.join(_label(r) for _, r in found)}); add the grid "
                         f"(MODEL/SOLVER/STEPS/GRID) or compare in a folder with one run")
    return found[0]


def _label(rec: dict) -> str:
    if rec.get("model") == "independent":
        return "independent"
    steps, grid = record_steps(rec), rec.get("grid")
    return "/".join([str(rec.get("model")), str(rec.get("solver"))] + ([str(steps)] if steps is not None else [])
                    + ([str(grid)] if steps is not None and isinstance(grid, str) and grid else []))


def load_coupling(store: ResultStore, spec: str, problem) -> tuple[Coupling, dict]:
    """The cell's saved samples, with their source points rebuilt from the seeds, and its record."""
    key, rec = find_cell(store, spec)
    if rec.get("model") == "independent":
        first, last = (int(s) for s in str(rec["seeds"]).split("-"))
        seeds = np.arange(first, last + 1)
        z1 = problem.independent_target([int(s) for s in seeds])
        seeds = seeds[:len(z1)]
        return Coupling("independent", problem.initial([int(s) for s in seeds]), z1, seeds), rec
    path = store.cells_dir / f"{key}.npz"
    if not path.is_file():
        raise ValueError(f"{spec}: its samples are not saved ({path} is missing); rerun the same command with "
                         f"--save-samples (it samples again the kept cells whose samples are missing)")
    x, z0, seeds, _ = read_samples(path, tuple(problem.shape))
    if seeds is None:
        raise ValueError(f"{path}: no seeds saved beside the samples, so the pairs cannot be matched")
    if z0 is None:
        z0 = problem.initial([int(s) for s in seeds])
    return Coupling(_label(rec), z0, x, np.asarray(seeds)), rec


def paired(a: Coupling, b: Coupling) -> tuple[Coupling, Coupling]:
    """``a`` and ``b`` on the seeds they share, in one order."""
    common, ia, ib = np.intersect1d(a.seeds, b.seeds, return_indices=True)
    if len(common) < 2:
        raise ValueError(f"{a.label} and {b.label} share {len(common)} seed(s); a paired comparison needs the same "
                         f"seeds (cells of one run)")
    pick = lambda c, i: Coupling(c.label, c.z0[i], c.z1[i], common)   # noqa: E731
    a, b = pick(a, torch.as_tensor(ia)), pick(b, torch.as_tensor(ib))
    if not torch.equal(a.z0, b.z0):
        raise ValueError(f"{a.label} and {b.label} start from different source points for the same seeds")
    return a, b


def _row(metric: str, va: float, vb: float, diff: np.ndarray | float, se: float, n: int) -> dict:
    difference = float(np.mean(diff)) if isinstance(diff, np.ndarray) else float(diff)
    z = difference / se if se > 0 else (math.inf if difference else 0.0)
    lower = column_directions().get(metric, "lower") == "lower"
    better = "a" if (difference < 0) == lower else "b"
    return {"metric": metric, "a": va, "b": vb, "a_minus_b": difference, "paired_se": se, "z": z,
            "resolved": bool(abs(z) >= RESOLVED_SE), "better": better if abs(z) >= RESOLVED_SE else "neither",
            "n": n}


def compare_couplings(a: Coupling, b: Coupling, metrics: tuple[str, ...], reference: torch.Tensor | None = None,
                      draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """Per metric of ``metrics`` (those of :data:`COMPARED`), the paired difference a - b and its standard error."""
    a, b = paired(a, b)
    n = len(a.seeds)
    rows = []
    if "w2" in metrics and reference is not None:
        ref = reference[:n]
        wa, ua = w2_duals(a.z1, ref)
        wb, ub = w2_duals(b.z1, ref)
        if wa > 0 and wb > 0:
            grad = ua / (2 * wa) - ub / (2 * wb)
            rows.append(_row("w2", wa, wb, wa - wb, float(np.std(grad, ddof=1)) / math.sqrt(n), n))
    if "energy" in metrics and reference is not None:
        ea, xa, ya = energy_terms(a.z1, reference)
        eb, xb, yb = energy_terms(b.z1, reference)
        if xa is not None:
            rows.append(_row("energy", ea, eb, ea - eb, jackknife_se(xa - xb, ya - yb), n))
    if "transport_cost" in metrics:
        ca = (a.z1 - a.z0).to(torch.float64).reshape(n, -1).pow(2).sum(1).numpy()
        cb = (b.z1 - b.z0).to(torch.float64).reshape(n, -1).pow(2).sum(1).numpy()
        d = ca - cb
        rows.append(_row("transport_cost", float(ca.mean()), float(cb.mean()), d,
                         float(np.std(d, ddof=1)) / math.sqrt(n), n))
    if "crossing_prob" in metrics and a.z0.shape[1:] == (2,):
        i, j = draw_pairs(n, draws, seed)
        ha = segments_intersect(a.z0[i], a.z1[i], a.z0[j], a.z1[j]).double().numpy()
        hb = segments_intersect(b.z0[i], b.z1[i], b.z0[j], b.z1[j]).double().numpy()
        d = ha - hb
        rows.append(_row("crossing_prob", float(ha.mean()), float(hb.mean()), d, pair_draws_se(d, i, j, n), n))
    return pd.DataFrame(rows)


def _open(run: str | Path, spec: str):
    """The run's store, the suite of the cell ``spec`` (registered, same version) and the metrics compare pairs."""
    store = ResultStore(run)
    if not store.cells_dir.is_dir():
        raise ValueError(f"{run}: no cells/ folder; compare takes the --out folder of a run (with --save-samples)")
    _, rec = find_cell(store, spec)
    name = str(rec.get("suite"))
    if name not in SUITES:
        raise ValueError(f"{run}: suite {name!r} is not registered (load its plugin with --plugin)")
    suite = SUITES[name]
    if rec.get("suite_version") != suite.version:
        raise ValueError(f"{run} holds suite {name} v{rec.get('suite_version')}, this rfbench has v{suite.version}")
    metrics = tuple(m for m in COMPARED if m in suite.metrics)
    if not metrics:
        raise ValueError(f"suite {name} has none of the metrics compare pairs ({', '.join(COMPARED)}); its image "
                         f"metrics are not compared yet")
    return store, suite, metrics


def compare_cells(run: str | Path, a: str, b: str, draws: int = DRAWS) -> tuple[pd.DataFrame, str]:
    """The paired differences between the cells ``a`` and ``b`` of the run folder ``run``, and the suite's name."""
    if draws < 2:
        raise ValueError(f"--draws takes an integer >= 2, got {draws}")
    store, suite, metrics = _open(run, a)
    problem = suite.problem
    ca, ra = load_coupling(store, a, problem)
    cb, rb = load_coupling(store, b, problem)
    if (ra.get("suite"), ra.get("suite_version")) != (rb.get("suite"), rb.get("suite_version")):
        raise ValueError(f"{a} and {b} are cells of different suites or versions")
    n = min(len(ca.seeds), len(cb.seeds))
    reference = problem.reference(n) if {"w2", "energy"} & set(metrics) else None
    return compare_couplings(ca, cb, metrics, reference, draws), suite.name


def paired_table(run: str | Path, base: str, draws: int = DRAWS) -> tuple[pd.DataFrame, list[str]]:
    """Every finished cell of the run's suite against the cell ``base``, paired: one row per cell, per metric its
    value, the difference cell - base, its paired standard error and z (``rfbench table RUN --paired-with CELL``).
    Also the cells left out because their samples are not saved."""
    store, suite, metrics = _open(run, base)
    problem = suite.problem
    cb, rb = load_coupling(store, base, problem)
    reference = problem.reference(len(cb.seeds)) if {"w2", "energy"} & set(metrics) else None
    rows, unsaved = [], []
    for key, rec in store.records().items():
        if rec.get("status") != "ok" or (rec.get("suite"), rec.get("suite_version")) != (rb.get("suite"),
                                                                                        rb.get("suite_version")):
            continue
        if rec.get("model") != "independent" and not (store.cells_dir / f"{key}.npz").is_file():
            unsaved.append(_label(rec))
            continue
        ca, _ = load_coupling(store, "independent" if rec.get("model") == "independent" else _label(rec), problem)
        order = (suite.model_names.index(rec["model"]) if rec.get("model") in suite.model_names else -1,
                 str(rec.get("solver")), float(rec.get("nfe") or 0))
        row = {"cell": ca.label.removesuffix("/uniform"), "nfe": rec.get("nfe"), "order": order}
        for r in compare_couplings(ca, cb, metrics, reference, draws).to_dict("records"):
            m = r["metric"]
            row.update({m: r["a"], f"{m}_minus_base": r["a_minus_b"], f"{m}_paired_se": r["paired_se"],
                        f"{m}_z": r["z"]})
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("order", kind="stable").drop(columns="order").reset_index(drop=True)
    return table, sorted(unsaved)

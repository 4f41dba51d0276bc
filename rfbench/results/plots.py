"""Plots written beside the tables: quality against NFE and against wall-clock with the Pareto front and ±1
standard error bars, 2D trajectories of each model, and image sample grids. PNG, or PDF when the path says so."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from rfbench.files import atomic_write  # noqa: E402


# line and marker of each solver: 4 line styles x 10 markers, so the first 20 solvers of a plot all differ
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "*", "^", "D", "v", "P", "X", "<", "h")
STYLES = tuple((LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i in range(20))
MAX_LOG_TICKS = 10      # more labels than this on a log axis and they crowd: fall back to fewer mantissas


class ReadableLogLocator(ticker.Locator):
    """Major ticks of a log axis that read as plain numbers: every 1, 2 and 5 x 10^k in view when that gives at
    most :data:`MAX_LOG_TICKS`, else the powers of ten (every few of them on very wide ranges); a view narrower than
    one of those steps gets evenly spaced ticks (0.36, 0.38, 0.40, ...) so it still has at least two."""

    def __call__(self):
        lo, hi = self.axis.get_view_interval()
        return self.tick_values(lo, hi)

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin), float(vmax)))
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= 0:
            return np.array([])
        lo = lo if lo > 0 else hi / 10
        inside = lambda ticks: ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]   # noqa: E731
        powers = 10.0 ** np.arange(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        one_two_five = inside(np.outer(powers, (1, 2, 5)).ravel())
        if 2 <= len(one_two_five) <= MAX_LOG_TICKS:
            return one_two_five
        if len(one_two_five) > MAX_LOG_TICKS:
            return ticker.LogLocator(base=10, subs=(1.0,), numticks=MAX_LOG_TICKS).tick_values(lo, hi)
        linear = inside(ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi))
        return linear[linear > 0]


def _plain_number(value: float, _pos=None) -> str:
    return f"{value:g}"


def readable_log_axis(axis) -> None:
    """Make a log-scaled ``axis`` (``ax.xaxis`` or ``ax.yaxis``) label its ticks 0.05, 0.4, 1, 20 rather than
    5x10^-2; the minor ticks (2..9 x 10^k) stay for the grid, without labels."""
    axis.set_major_locator(ReadableLogLocator())
    axis.set_major_formatter(ticker.FuncFormatter(_plain_number))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=100))
    axis.set_minor_formatter(ticker.NullFormatter())


def timing_label(rows: pd.DataFrame) -> str:
    """The time axis's label, saying how many timed runs each cell's ``wall_clock_s`` is the median of (from the
    rows' ``timing`` column, e.g. "warmup=2nfe,repeats=3,repeat_noise=fresh,processes=1")."""
    repeats = sorted({int(m.group(1)) for text in rows.get("timing", pd.Series(dtype=object)).dropna()
                      if (m := re.search(r"repeats=(\d+)", str(text)))})
    base = "wall-clock seconds per cell, sampling"
    if not repeats:
        return f"{base} (median of --repeats timed runs)"
    if repeats == [1]:
        return f"{base} (one timed run per cell, no median: --repeats 1)"
    counts = f"{repeats[0]}" if len(repeats) == 1 else f"{repeats[0]}-{repeats[-1]}"
    return f"{base} (median of {counts} timed runs)"


def _standard_errors(rows: pd.DataFrame, metric: str) -> np.ndarray | None:
    """``{metric}_se`` of ``rows`` as floats, or None when the column is missing or has no value."""
    column = f"{metric}_se"
    if column not in rows:
        return None
    se = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    return se if np.isfinite(se).any() else None


def _error_extents(value: np.ndarray, se: np.ndarray, floor: float) -> np.ndarray:
    """(2, n) lower and upper bar lengths for ``value`` ± ``se`` on a log axis: the lower end is kept at or above
    ``floor`` (> 0), a missing or negative ``se`` draws no bar."""
    se = np.where(np.isfinite(se) & (se >= 0), se, np.nan)
    lower = value - np.maximum(value - se, floor)
    return np.vstack([np.maximum(lower, 0.0), se])


def draw_quality(ax, frame: pd.DataFrame, metric: str = "w2", cost: str = "nfe",
                 lower_is_better: bool = True) -> bool:
    """Draw :func:`plot_quality_vs_nfe`'s plot on ``ax``; False, with nothing drawn, when no cell has both a
    ``metric`` and a ``cost`` value."""
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if ok.empty or cost not in ok:
        return False
    sampled = ok[(ok["nfe"] > 0) & ok[cost].notna()]
    if sampled.empty:
        return False
    if "grid" in sampled:       # a solver on another grid than uniform is a line of its own: solver@grid
        sampled = sampled.assign(solver=[s if pd.isna(g) or g == "uniform" else f"{s}@{g}"
                                         for s, g in zip(sampled["solver"], sampled["grid"])])
    models = list(dict.fromkeys(sampled["model"]))
    solvers = list(dict.fromkeys(sampled["solver"]))
    # colour: model, numbered over the whole frame so a model keeps its colour in every metric's plot
    everyone = list(dict.fromkeys(m for m in frame["model"] if m != "independent"))
    colors = {m: plt.cm.tab10(everyone.index(m) % 10) for m in models}
    styles = {s: STYLES[i % len(STYLES)] for i, s in enumerate(solvers)}     # line and marker: solver
    values = sampled[metric].to_numpy(dtype=float)
    se_all = _standard_errors(sampled, metric)
    positive = values[values > 0]
    if se_all is not None:
        lows = values - se_all
        positive = np.concatenate([positive, lows[np.isfinite(lows) & (lows > 0)]])
    floor = 0.5 * positive.min() if positive.size else 1e-12     # where a bar reaching 0 or below ends (log y)
    order = [c for c in ("nfe", "steps") if c in sampled]        # lines join cells by NFE, not by noisy time
    bars = False
    for (model, solver), grp in sampled.groupby(["model", "solver"], sort=False):
        grp = grp.sort_values(order, kind="stable")
        ls, marker = styles[solver]
        x, y = grp[cost].to_numpy(dtype=float), grp[metric].to_numpy(dtype=float)
        look = dict(ls=ls, marker=marker, ms=5 if len(grp) > 1 else 9, color=colors[model])
        se = _standard_errors(grp, metric)
        if se is None:
            ax.plot(x, y, **look)
        else:
            ax.errorbar(x, y, yerr=_error_extents(y, se, floor), elinewidth=0.8, capsize=2, ecolor=colors[model],
                        **look)
            bars = True
    from rfbench.results.report import pareto_front
    front = sampled[pareto_front(sampled[cost], sampled[metric], lower_is_better)].sort_values(cost)
    ax.plot(front[cost], front[metric], ls="-", lw=4, color="gray", alpha=0.25, zorder=0)
    ax.scatter(front[cost], front[metric], s=110, facecolors="none", edgecolors="k", lw=1.2, zorder=5)
    # the legend says colour = model and line + marker = solver, rather than one entry for each of their pairs
    handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in models]
    handles += [Line2D([], [], color="0.35", ls=styles[s][0], marker=styles[s][1], ms=5, label=s) for s in solvers]
    handles.append(Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec="k",
                          label=f"Pareto front ({len(front)} cells)"))
    floor_rows = ok[ok["model"] == "independent"]
    if not floor_rows.empty:
        level = float(floor_rows[metric].iloc[0])
        ax.axhline(level, color="gray", ls="--", lw=1)
        label = "independent X1 (sampling floor)"
        floor_se = _standard_errors(floor_rows.iloc[:1], metric)
        if floor_se is not None:
            ax.axhspan(max(level - floor_se[0], floor), level + floor_se[0], color="gray", alpha=0.12, lw=0)
            label += ", band ±1 s.e."
        handles.append(Line2D([], [], color="gray", ls="--", lw=1, label=label))
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_axis(ax.xaxis)
    readable_log_axis(ax.yaxis)
    ax.set_xlabel("NFE (counted)" if cost == "nfe" else timing_label(sampled) if cost == "wall_clock_s" else cost)
    ax.set_ylabel(f"{metric} (bars: ±1 standard error)" if bars else metric)
    title = f"{frame['suite'].iloc[0]}: {metric} against {'NFE' if cost == 'nfe' else 'wall-clock'}"
    if cost != "nfe":
        title += "\n(each line joins a model's and solver's cells in order of NFE)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              handlelength=3.2, ncol=2 if len(handles) > 24 else 1, title="colour: model; line, marker: solver",
              title_fontsize=7)
    return True


def plot_quality_vs_nfe(frame: pd.DataFrame, path: str | Path, metric: str = "w2", cost: str = "nfe",
                        lower_is_better: bool = True) -> Path | None:
    """``metric`` against ``cost`` (counted NFE, or wall_clock_s: the median of the timed repeats; log scales with
    plain-number labels), one line per model and solver joined in order of NFE, with ±1 standard error bars where
    the frame has ``{metric}_se``; the Pareto front of the point values (no other cell is both cheaper and better)
    is circled and joined; the independent coupling's value, when present, is drawn as the floor that sampling noise
    alone gives. The file type follows the suffix."""
    fig, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
    if not draw_quality(ax, frame, metric, cost, lower_is_better):
        plt.close(fig)
        return None
    return _write(fig, path, dpi=130)


COSTS = (("nfe", "nfe"), ("wall_clock_s", "time"))   # (column, file-name word) of the cost axes


def plot_quality_vs_costs(frame: pd.DataFrame, folder: str | Path, metric: str, lower_is_better: bool = True,
                          fmt: str = "png", prefix: str = "") -> list[Path]:
    """``PREFIX{metric}_vs_nfe.FMT`` and ``PREFIX{metric}_vs_time.FMT`` in ``folder`` (those that have points)."""
    paths = [plot_quality_vs_nfe(frame, Path(folder) / f"{prefix}{metric}_vs_{word}.{fmt}", metric, cost,
                                 lower_is_better) for cost, word in COSTS]
    return [p for p in paths if p is not None]


def plot_trajectories(trajectories: dict[str, tuple[str, np.ndarray]], target: np.ndarray, path: str | Path,
                      max_paths: int = 300) -> Path | None:
    """One panel per model: paths from x0 (blue) to samples (red) over the target samples (light).

    trajectories: model -> (label of the cell, states of shape (K+1, N, 2)).
    """
    if not trajectories:
        return None
    fig, axes = _panels(len(trajectories), 3, 4.0)
    for ax, (model, (label, states)) in zip(axes.flat, trajectories.items()):
        states = np.asarray(states)[:, :max_paths]
        ax.scatter(target[:, 0], target[:, 1], s=2, c="#e0c080", alpha=0.4, label="target")
        ax.plot(states[:, :, 0], states[:, :, 1], color="k", lw=0.4, alpha=0.35)
        ax.scatter(states[0, :, 0], states[0, :, 1], s=3, c="tab:blue", label="x0")
        ax.scatter(states[-1, :, 0], states[-1, :, 1], s=3, c="tab:red", label="sample")
        ax.set_title(f"{model} ({label})", fontsize=9)
        ax.set_aspect("equal")
    axes.flat[0].legend(fontsize=7, loc="upper left", markerscale=3)
    return _save(fig, axes, len(trajectories), path)


def grid_rows(nfes: list[float], rows: int = 4) -> list[int]:
    """Which of a model's cells get a row in its sample grid: at most ``rows`` distinct NFEs, spread evenly over the
    sorted distinct NFEs (the cheapest and the dearest always in), the first cell in the given order for each.
    Returns positions into ``nfes``, by increasing NFE."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    first: dict[float, int] = {}
    for i, nfe in enumerate(nfes):
        if nfe is not None and np.isfinite(nfe):
            first.setdefault(float(nfe), i)
    distinct = sorted(first)
    if len(distinct) <= rows:
        return [first[v] for v in distinct]
    picks = sorted({round(j * (len(distinct) - 1) / (rows - 1)) for j in range(rows)}) if rows > 1 else [0]
    return [first[distinct[j]] for j in picks]


def plot_model_grids(samples: dict[str, tuple[str, float, np.ndarray]], out_dir: str | Path, ext: str = "png",
                     rows: int = 4, per_row: int = 16) -> list[Path]:
    """``samples_MODEL.EXT`` per model: rows at a few NFEs (:func:`grid_rows`), the same seeds in every row.

    samples: cell label -> (model, NFE, images (n, C, H, W) in [-1, 1]), in the run's order."""
    by_model: dict[str, list[tuple[str, float, np.ndarray]]] = {}
    for label, (model, nfe, images) in samples.items():
        by_model.setdefault(model, []).append((label, nfe, images))
    paths = []
    for model, cells in by_model.items():
        chosen = [cells[i] for i in grid_rows([nfe for _, nfe, _ in cells], rows)]
        rows_shown = {f"{label.split('/', 1)[-1]}, NFE {nfe:g}": images for label, nfe, images in chosen}
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)
        path = plot_sample_grid(rows_shown, Path(out_dir) / f"samples_{safe}.{ext}", per_row=per_row)
        if path is not None:
            paths.append(path)
    return paths


def plot_sample_grid(samples: dict[str, np.ndarray], path: str | Path, per_row: int = 16) -> Path | None:
    """One row of images per cell (the same seeds in every row, so rows compare directly).

    samples: cell label -> images (n, C, H, W) in [-1, 1]; C is 1 (grayscale) or 3.
    """
    if not samples:
        return None
    rows = len(samples)
    fig, axes = plt.subplots(rows, 1, figsize=(per_row * 0.55 + 1.6, rows * 0.62 + 0.2), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], samples.items()):
        images = np.clip((np.asarray(images[:per_row], dtype=np.float32) + 1) / 2, 0, 1)
        strip = np.concatenate([np.pad(img.transpose(1, 2, 0), ((1, 1), (1, 1), (0, 0)), constant_values=1)
                                for img in images], axis=1)
        ax.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return _write(fig, path, dpi=110)


def plot_coupling(couplings: dict[str, tuple[str, np.ndarray, np.ndarray]], path: str | Path,
                  max_segments: int = 60) -> Path | None:
    """One panel per coupling: the segments from z0 to z1 of its first ``max_segments`` pairs, those that cross
    another drawn segment in red with each crossing marked (x), the rest grey; the title gives how many of the drawn
    pairs of segments cross (the crossing probability's estimate on this sample).

    couplings: name -> (label, z0 (N, 2), z1 (N, 2)); the segment tests are :func:`segments_intersect`'s.
    """
    import torch                                               # this module is torch-free until a coupling is drawn

    from rfbench.metrics.coupling import segments_intersect

    if not couplings:
        return None
    fig, axes = _panels(len(couplings), 4, 3.6)
    for ax, (name, (label, z0, z1)) in zip(axes.flat, couplings.items()):
        z0, z1 = np.asarray(z0, dtype=np.float64)[:max_segments], np.asarray(z1, dtype=np.float64)[:max_segments]
        i, j = np.triu_indices(len(z0), k=1)
        hit = segments_intersect(*(torch.as_tensor(v) for v in (z0[i], z1[i], z0[j], z1[j]))).numpy()
        crossed = np.zeros(len(z0), dtype=bool)
        crossed[i[hit]] = crossed[j[hit]] = True
        for k in np.argsort(crossed):        # the crossing segments on top
            ax.plot(*np.stack([z0[k], z1[k]]).T, lw=0.9 if crossed[k] else 0.5,
                    color="tab:red" if crossed[k] else "0.6", alpha=0.9 if crossed[k] else 0.5)
        points = _crossings(z0[i[hit]], z1[i[hit]], z0[j[hit]], z1[j[hit]])
        ax.scatter(points[:, 0], points[:, 1], marker="x", s=14, c="k", lw=0.8, zorder=3)
        ax.scatter(z0[:, 0], z0[:, 1], s=4, c="tab:blue", zorder=2)
        ax.scatter(z1[:, 0], z1[:, 1], s=4, c="tab:orange", zorder=2)
        ax.set_title(f"{name} ({label})\n{int(hit.sum())} of {len(hit)} segment pairs cross "
                     f"({hit.mean():.4f})", fontsize=8)
        ax.set_aspect("equal")
    return _save(fig, axes, len(couplings), path)


def _panels(n: int, most: int, size: float):
    """A figure of n square panels, at most ``most`` per row."""
    cols = min(n, most)
    rows = math.ceil(n / cols)
    return plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)


def _save(fig, axes, used: int, path: str | Path) -> Path:
    """Blank the unused panels, write the figure and close it."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    return _write(fig, path, dpi=130)


def _write(fig, path: str | Path, dpi: int) -> Path:
    """Write the figure to ``path`` (its type from the suffix) through :func:`rfbench.files.atomic_write`, which
    replaces a link at ``path`` rather than writing through it, and close the figure."""
    path = Path(path)
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=path.suffix.lstrip(".").lower() or None))
    finally:
        plt.close(fig)
    return path


def _crossings(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Where the segments p1p2 and q1q2 (known to intersect) meet; collinear overlaps at p1."""
    r, s = p2 - p1, q2 - q1
    denom = r[:, 0] * s[:, 1] - r[:, 1] * s[:, 0]
    t = np.divide((q1 - p1)[:, 0] * s[:, 1] - (q1 - p1)[:, 1] * s[:, 0], denom,
                  out=np.zeros(len(denom)), where=denom != 0)
    return p1 + t[:, None] * r


def plot_paths(trajectories: dict[str, tuple[str, np.ndarray]], reference: np.ndarray,
               independent: tuple[np.ndarray, np.ndarray] | None, folder: str | Path, ext: str = "png",
               max_paths: int = 300) -> list[Path]:
    """The 2D suites' path figures: ``trajectories.EXT`` (each model's paths over the target) and ``coupling.EXT``
    (each model's coupling and, when given, the independent one, with their crossings)."""
    folder = Path(folder)
    couplings = {} if independent is None else {"independent": ("X0, X1 drawn apart", *independent)}
    couplings.update({model: (label, states[0], states[-1]) for model, (label, states) in trajectories.items()})
    files = [plot_trajectories(trajectories, reference, folder / f"trajectories.{ext}", max_paths=max_paths),
             plot_coupling(couplings if trajectories else {}, folder / f"coupling.{ext}")]
    return [f for f in files if f is not None]

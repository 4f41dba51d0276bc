"""Plots written beside the tables: quality against NFE and against wall-clock with the Pareto front, 2D
trajectories of each model, and image sample grids. PNG, or PDF when the path says so."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


STYLES = (("-", "o"), ("--", "s"), (":", "*"), ("-.", "^"), ("-", "D"), ("--", "v"))


def plot_quality_vs_nfe(frame: pd.DataFrame, path: str | Path, metric: str = "w2", cost: str = "nfe",
                        lower_is_better: bool = True) -> Path | None:
    """``metric`` against ``cost`` (counted NFE, or wall_clock_s; log scales), one line per model and solver; the
    Pareto front (no other cell is both cheaper and better) is circled and joined; the independent coupling's value,
    when present, is drawn as the floor that sampling noise alone gives. The file type follows the suffix."""
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if ok.empty or cost not in ok:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sampled = ok[(ok["nfe"] > 0) & ok[cost].notna()]
    if sampled.empty:
        plt.close(fig)
        return None
    if "grid" in sampled:       # a solver on another grid than uniform is a line of its own: solver@grid
        sampled = sampled.assign(solver=[s if pd.isna(g) or g == "uniform" else f"{s}@{g}"
                                         for s, g in zip(sampled["solver"], sampled["grid"])])
    models = list(dict.fromkeys(sampled["model"]))
    solvers = list(dict.fromkeys(sampled["solver"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}          # colour: model
    styles = {s: STYLES[i % len(STYLES)] for i, s in enumerate(solvers)}     # line and marker: solver
    for (model, solver), grp in sampled.groupby(["model", "solver"], sort=False):
        grp = grp.sort_values(cost)
        ls, marker = styles[solver]
        ax.plot(grp[cost], grp[metric], ls=ls, marker=marker, ms=5 if len(grp) > 1 else 9, color=colors[model],
                label=f"{model} {solver}")
    from rfbench.results.report import pareto_front
    front = sampled[pareto_front(sampled[cost], sampled[metric], lower_is_better)].sort_values(cost)
    ax.plot(front[cost], front[metric], ls="-", lw=4, color="gray", alpha=0.25, zorder=0)
    ax.scatter(front[cost], front[metric], s=110, facecolors="none", edgecolors="k", lw=1.2,
               label=f"Pareto front ({len(front)} cells)", zorder=5)
    floor = ok[ok["model"] == "independent"]
    if not floor.empty:
        ax.axhline(float(floor[metric].iloc[0]), color="gray", ls="--", lw=1,
                   label="independent X1 (sampling floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    xlabel = {"nfe": "NFE (counted)", "wall_clock_s": "wall-clock seconds per cell (sampling)"}.get(cost, cost)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{frame['suite'].iloc[0]}: {metric} against {'NFE' if cost == 'nfe' else 'wall-clock'}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


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
    n = len(trajectories)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax, (model, (label, states)) in zip(axes.flat, trajectories.items()):
        states = np.asarray(states)[:, :max_paths]
        ax.scatter(target[:, 0], target[:, 1], s=2, c="#e0c080", alpha=0.4, label="target")
        ax.plot(states[:, :, 0], states[:, :, 1], color="k", lw=0.4, alpha=0.35)
        ax.scatter(states[0, :, 0], states[0, :, 1], s=3, c="tab:blue", label="x0")
        ax.scatter(states[-1, :, 0], states[-1, :, 1], s=3, c="tab:red", label="sample")
        ax.set_title(f"{model} ({label})", fontsize=9)
        ax.set_aspect("equal")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left", markerscale=3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


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
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The quality plots: ±1 standard error bars where the frame has them, plain-number log-axis labels, an honest time
axis. Each test draws on an axis in memory, or writes under tmp_path."""

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import ErrorbarContainer

from rfbench.results.plots import MAX_LOG_TICKS, ReadableLogLocator, draw_quality, plot_quality_vs_costs


def _frame(se: bool = True, repeats: int = 3) -> pd.DataFrame:
    """Two models, euler at 1, 2, 4 and 8 steps; the times are noisy (2 steps timed slower than 4), one standard
    error is missing and one is larger than its value."""
    rows = []
    for model, scale in (("1-rf", 1.0), ("2-rf", 0.3)):
        for steps, seconds, error in ((1, 0.010, 0.05), (2, 0.031, 0.02), (4, 0.030, np.nan), (8, 0.080, 0.4)):
            rows.append(dict(suite="toy", status="ok", model=model, solver="euler", steps=steps, grid="uniform",
                             nfe=steps, wall_clock_s=seconds * scale, timing=f"warmup=2nfe,repeats={repeats}",
                             w2=scale * 4.0 / steps, w2_se=error))
    rows.append(dict(suite="toy", status="ok", model="independent", solver="none", steps=np.nan, grid=np.nan, nfe=0,
                     wall_clock_s=np.nan, timing=np.nan, w2=0.05, w2_se=0.01))
    frame = pd.DataFrame(rows)
    return frame if se else frame.drop(columns="w2_se")


def _draw(frame, cost="nfe"):
    fig, ax = plt.subplots()
    assert draw_quality(ax, frame, "w2", cost, True)
    return fig, ax


def _bars(ax) -> dict[tuple[float, float], tuple[float, float]]:
    """(x, value) -> (lower end, upper end) of every vertical error bar on ``ax``."""
    out = {}
    for container in ax.containers:
        assert isinstance(container, ErrorbarContainer) and container.has_yerr
        data_line, _, (bars,) = container.lines
        assert isinstance(bars, LineCollection)
        for x, y, segment in zip(data_line.get_xdata(), data_line.get_ydata(), bars.get_segments()):
            if len(segment):                                          # a missing se leaves an empty segment
                (x_lo, lo), (x_hi, hi) = segment
                assert x_lo == x_hi == x
                out[(x, y)] = (lo, hi)
    return out


def test_standard_errors_are_drawn_as_bars_of_value_plus_minus_se():
    frame = _frame()
    fig, ax = _draw(frame)
    bars = _bars(ax)
    cells = frame[frame["nfe"] > 0]
    for _, row in cells.iterrows():
        key = (row["nfe"], row["w2"])
        if np.isnan(row["w2_se"]):
            assert key not in bars                                      # no value, no bar
        elif row["w2_se"] < row["w2"]:
            assert bars[key] == pytest.approx((row["w2"] - row["w2_se"], row["w2"] + row["w2_se"]))
        else:                                                           # would reach 0 or below: clipped, > 0
            lo, hi = bars[key]
            assert 0 < lo < row["w2"] and hi == pytest.approx(row["w2"] + row["w2_se"])
    assert len(bars) == 6 and len(ax.containers) == 2                  # one bar per cell with an se, per line
    assert "±1 standard error" in ax.get_ylabel()
    # the Pareto front is of the point values: the 2-rf cells (1-rf's 8 steps would join it by its bar's lower end)
    (front,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    expected = sorted((r.nfe, r.w2) for r in cells.itertuples() if r.model == "2-rf")
    np.testing.assert_allclose(sorted(map(tuple, front.get_offsets().tolist())), expected)
    plt.close(fig)


def test_no_standard_error_column_draws_no_bars():
    fig, ax = _draw(_frame(se=False))
    assert ax.containers == [] and "standard error" not in ax.get_ylabel()
    plt.close(fig)
    fig, ax = _draw(_frame().assign(w2_se=np.nan))                     # a column with no value: the same
    assert ax.containers == [] and ax.get_ylabel() == "w2"
    plt.close(fig)


def test_log_axes_label_ticks_as_plain_numbers():
    fig, ax = _draw(_frame())
    fig.canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_text()]
        assert labels and not any("$" in s or "10^" in s or "times" in s for s in labels), labels
        assert all(float(s) > 0 for s in labels)                       # "0.05", "0.4", "1", "2": numbers as typed
    assert "0.5" in [t.get_text() for t in ax.yaxis.get_ticklabels()]
    plt.close(fig)


def test_log_ticks_are_one_two_five_then_fewer_on_wide_ranges():
    ticks = ReadableLogLocator().tick_values
    assert ticks(0.3, 40) == pytest.approx([0.5, 1, 2, 5, 10, 20])
    wide = ticks(1e-3, 1e4)                                           # 7 decades: 1, 2, 5 would give 22 labels
    assert 2 <= len(wide) <= MAX_LOG_TICKS
    assert np.allclose(np.log10(wide), np.round(np.log10(wide)))      # powers of ten only
    narrow = ticks(0.35, 0.45)                                        # no 1, 2 or 5 x 10^k in view
    assert len(narrow) >= 2 and ((narrow >= 0.35) & (narrow <= 0.45)).all()


def test_time_axis_is_labelled_as_the_median_and_lines_join_cells_by_nfe():
    fig, ax = _draw(_frame(repeats=3), cost="wall_clock_s")
    assert "median of 3 timed runs" in ax.get_xlabel()
    for container in ax.containers:                                   # x in NFE order, though the times are not
        seconds = container.lines[0].get_xdata()
        assert list(seconds) == pytest.approx(list(np.array([0.010, 0.031, 0.030, 0.080]) * seconds[0] / 0.010))
    plt.close(fig)
    fig, ax = _draw(_frame(repeats=1), cost="wall_clock_s")
    assert "one timed run per cell" in ax.get_xlabel()                # no median to speak of
    plt.close(fig)


def test_quality_vs_costs_writes_both_files(tmp_path):
    paths = plot_quality_vs_costs(_frame(), tmp_path, "w2", True, "png", prefix="toy_")
    assert paths == [tmp_path / "toy_w2_vs_nfe.png", tmp_path / "toy_w2_vs_time.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert plot_quality_vs_costs(_frame(), tmp_path, "fid", True, "png") == []   # no such metric: no file


def test_coupling_plot_marks_where_segments_cross(tmp_path):
    from rfbench.results.plots import _crossings, plot_coupling
    p1, p2 = np.array([[0.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 2.0], [4.0, 1.0]])
    q1, q2 = np.array([[0.0, 2.0], [2.0, 0.0]]), np.array([[2.0, 0.0], [2.0, 3.0]])
    assert _crossings(p1, p2, q1, q2) == pytest.approx(np.array([[1.0, 1.0], [2.0, 1.0]]))
    z0 = np.array([[0.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    z1 = np.array([[2.0, 2.0], [2.0, 0.0], [6.0, 5.0]])                 # the first two cross, the third is apart
    path = plot_coupling({"made": ("by hand", z0, z1)}, tmp_path / "coupling.png")
    assert path.stat().st_size > 0
    assert plot_coupling({}, tmp_path / "none.png") is None


class _Shift:
    """A constant velocity: a flow model that needs no training."""

    input_shape = (2,)

    def __call__(self, x, t):
        return x * 0 + 0.5


def test_a_plot_path_that_is_a_link_is_replaced_not_written_through(tmp_path):
    """Every file rfbench writes goes through rfbench.files.atomic_write: a plot whose path is a link to a file
    outside --out (w2_vs_nfe.png -> ../victim) gets a file of its own in place of the link, and the file the link
    pointed at is left as it was (matplotlib used to write through the link)."""
    from rfbench.cli import main
    from rfbench.suites import Cell
    from tests.standins import registered, standin
    suite = standin("toy2d", "toy2d-links", {"shift": _Shift()}, cells=(Cell("shift", "euler", 1),), num_samples=40,
                    metrics=("w2",))
    out, victim, victim_too = tmp_path / "out", tmp_path / "victim", tmp_path / "victim-too"
    run = ["--suite", "toy2d-links", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet", "--device",
           "cpu"]

    def link(name: str, target: Path) -> Path:
        target.write_bytes(b"precious")
        path = out / name
        path.unlink(missing_ok=True)
        path.symlink_to(os.path.relpath(target, out))
        return path

    def replaced(path: Path, target: Path) -> None:
        assert target.read_bytes() == b"precious", f"{path.name} was written through its link"
        assert not path.is_symlink() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with registered(suite):
        assert main(run) == 0
        plot, paths = link("w2_vs_nfe.png", victim), link("trajectories.png", victim_too)
        assert main(["table", str(out), "--plots", "png"]) == 0            # the table's plots
        replaced(plot, victim)
        plot = link("w2_vs_nfe.png", victim)
        assert main(run + ["--force"]) == 0                               # the run's plots
        replaced(plot, victim)
        replaced(paths, victim_too)

"""Paper tables (markdown, LaTeX, CSV), the Pareto front, the seed-to-seed spread and the regression gate, on the
output of real (stand-in model) runs through the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rfbench.cli import main
from rfbench.metrics import column_directions, interval_methods
from rfbench.results.gate import GateMismatch, compare, parse_tolerance, spread_table
from rfbench.results.report import pareto_front, render_table
from rfbench.suites import Cell
from tests.standins import registered, standin


class Pull:
    """Moves points toward the 8-Gaussian ring: finite, seed-dependent metrics, different per step count."""

    input_shape = (2,)

    def __call__(self, x, t):
        r = x.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return (4.0 / r - 1.0) * x * 0.8


@pytest.fixture
def gate_suite():
    suite = standin("toy2d", "toy2d-gate", {"pull": Pull()}, num_samples=400, straightness_samples=50,
                    straightness_steps=10,
                    cells=(Cell("pull", "euler", 1), Cell("pull", "euler", 4), Cell("pull", "rk45")))
    with registered(suite):
        yield suite


def _run(tmp_path, name: str, *extra: str) -> tuple[int, pd.DataFrame]:
    out = tmp_path / name
    code = main(["--suite", "toy2d-gate", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet",
                 "--no-plots", "--device", "cpu", *extra])
    return code, pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else None


def test_tables_render_in_every_format(gate_suite, tmp_path, capsys):
    code, frame = _run(tmp_path, "run")
    assert code == 0
    md = render_table(frame, "markdown", directions=column_directions())
    assert md.splitlines()[0].startswith("| Method") and "| W2" in md.splitlines()[0] and "adaptive" in md
    tex = render_table(frame, "latex", directions=column_directions())
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    sampled = frame[frame["model"] != "independent"]
    best_w2 = f"{sampled['w2'].min():.3f}"
    assert f"\\textbf{{{best_w2}}}" in tex                          # lower w2 is better: the minimum is bold
    assert tex.count("\\textbf{") >= 4 and "$W_2$" in tex
    assert "\\textbf{1}" not in tex                                   # NFE is the budget, never bold
    # the CLI's table marks only the columns that rank samples: a coupling's transport cost describes it
    from rfbench.metrics import quality_directions
    marked = quality_directions()
    assert {"fid", "w2", "solver_error", "precision", "recall", "is", "kid"} <= set(marked)
    assert not {"transport_cost", "crossing_prob", "straightness", "nfe", "wall_clock_s"} & set(marked)
    quality_only = render_table(frame, "latex", columns=["model", "solver", "w2", "transport_cost"],
                                directions=marked)
    best_cost = f"{sampled['transport_cost'].min():.3f}"
    assert f"\\textbf{{{best_w2}}}" in quality_only and f"\\textbf{{{best_cost}}}" not in quality_only
    assert quality_only.count("\\textbf{") == (sampled["w2"] == sampled["w2"].min()).sum()
    assert main(["table", str(tmp_path / "run"), "--format", "latex", "--columns", "model", "transport_cost"]) == 0
    assert "\\textbf{" not in capsys.readouterr().out
    from rfbench.results.report import _latex
    assert _latex("a\\b_c~{x}") == r"a\textbackslash{}b\_c\textasciitilde{}\{x\}"
    intervals = render_table(frame, "markdown", columns=["model", "transport_cost", "crossing_prob"], intervals=True)
    row = frame[frame["model"] != "independent"].iloc[0]
    assert f"{row['transport_cost']:.3f} ± {1.959963984540054 * row['transport_cost_se']:.3f}" in intervals
    table, note = intervals.split("\n\n")
    assert table.count("±") == 2 * len(frame)
    assert note.splitlines()[0] == "± is 1.96 standard errors (a 95% normal interval):"   # and how each was estimated
    assert note.splitlines()[1:] == ["- Transport cost: standard error as recorded", "- Crossing prob.: standard "
                                     "error as recorded"]                                # no methods passed here
    w2_interval = render_table(frame, "latex", columns=["model", "w2"], intervals=True, methods=interval_methods())
    assert "$\\pm$" in w2_interval and w2_interval.splitlines()[-1].startswith("% - W2: asymptotic: sd of the")
    csv = pd.read_csv(__import__("io").StringIO(render_table(frame, "csv", columns=["model", "nfe", "w2"])))
    assert list(csv.columns) == ["model", "nfe", "w2"] and len(csv) == 4
    with pytest.raises(ValueError, match="no column 'fidd'"):
        render_table(frame, "markdown", columns=["model", "fidd"])
    assert main(["table", str(tmp_path / "run"), "--format", "latex", "--columns", "model", "solver", "w2"]) == 0
    out = capsys.readouterr().out
    assert "Method & Solver & $W_2$ \\\\" in out and out.count("\\\\") == 5     # header + 4 rows
    assert main(["table", str(tmp_path / "run"), "--format", "markdown", "--output", str(tmp_path / "t1.md"),
                 "--plots", "pdf"]) == 0
    assert (tmp_path / "t1.md").read_text().startswith("| Method")
    for name in ("t1_w2_vs_nfe.pdf", "t1_w2_vs_time.pdf"):
        assert (tmp_path / name).read_bytes().startswith(b"%PDF")
    assert main(["table", str(tmp_path / "run"), "--output", str(tmp_path / "t2.tex"), "--format", "latex",
                 "--intervals"]) == 0                          # a table written to a file gets its plots beside it
    assert "% - W2: asymptotic" in (tmp_path / "t2.tex").read_text()
    for name in ("t2_w2_vs_nfe.png", "t2_w2_vs_time.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert main(["table", str(tmp_path / "run"), "--output", str(tmp_path / "t3.md"), "--plots", "none"]) == 0
    assert not list(tmp_path.glob("t3_*"))
    with pytest.raises(SystemExit):
        main(["table", str(tmp_path / "nowhere")])
    assert "no results at" in capsys.readouterr().err


def test_pareto_front():
    cost = [1, 2, 4, 8, 8, np.nan]
    quality = [5.0, 3.0, 3.5, 1.0, 2.0, 0.1]
    assert pareto_front(cost, quality).tolist() == [True, True, False, True, False, False]
    assert pareto_front(cost, quality, lower_is_better=False).tolist() == [True] + [False] * 5   # 5 at cost 1
    higher = [1.0, 3.0, 2.0, 5.0, 4.0, 9.0]
    assert pareto_front(cost, higher, lower_is_better=False).tolist() == [True, True, False, True, False, False]


def test_gate_passes_on_an_identical_run_and_fails_on_a_doctored_baseline(gate_suite, tmp_path, capsys):
    code, base = _run(tmp_path, "base")
    assert code == 0
    base_csv = tmp_path / "baseline.csv"
    base.to_csv(base_csv, index=False)
    code, _ = _run(tmp_path, "same", "--check", str(base_csv), "--fail-on", "w2:+10%", "--fail-on", "nfe:+0")
    assert code == 0
    assert "gate: passed: 0 of" in capsys.readouterr().err
    # a baseline 20% better in w2 for euler/4, and one NFE cheaper for rk45: the run now looks worse in both
    doctored = base.copy()
    row = (doctored["solver"] == "euler") & (doctored["steps"] == 4)
    doctored.loc[row, "w2"] = base.loc[row, "w2"] / 1.2
    rk = doctored["solver"] == "rk45"
    doctored.loc[rk, "nfe"] = base.loc[rk, "nfe"] - 1
    doctored.to_csv(base_csv, index=False)
    code, _ = _run(tmp_path, "again", "--check", str(base_csv), "--fail-on", "w2:+10%", "--fail-on", "nfe:+0")
    assert code == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gate: FAIL ")]
    assert len(err) == 2
    new_w2 = float(base.loc[row, "w2"].iloc[0])
    assert err[0].startswith("gate: FAIL pull/euler/4 w2: baseline ") and f"new {new_w2:.6g}" in err[0]
    assert "tolerance +10%" in err[0]
    assert err[1].startswith("gate: FAIL pull/rk45/adaptive nfe:") and "tolerance +0" in err[1]


def test_gate_refuses_runs_that_differ_and_bad_tolerances(gate_suite, tmp_path, capsys):
    code, base = _run(tmp_path, "base")
    base_csv = tmp_path / "baseline.csv"
    base.to_csv(base_csv, index=False)
    with pytest.raises(SystemExit) as exc:      # another sample count: refused before any work
        main(["--suite", "toy2d-gate", "--num-samples", "300", "--check", str(base_csv), "--fail-on", "w2:+1%"])
    assert exc.value.code == 2
    assert "n_samples: baseline '400', run '300'" in capsys.readouterr().err
    other = base.copy()
    other["extractor"] = "digits (x, y)"
    with pytest.raises(GateMismatch, match="extractor: baseline 'digits"):
        compare(base, other, column_directions(), [parse_tolerance("w2:+1%", column_directions())])
    for spec, message in (("w2", r"METRIC:\+AMOUNT"), ("speed:+1", "'speed' has no better direction")):
        with pytest.raises(ValueError, match=message):
            parse_tolerance(spec, column_directions())
    with pytest.raises(SystemExit):
        main(["--suite", "toy2d-gate", "--check", str(base_csv)])      # no --fail-on and no spread file
    assert "no tolerances" in capsys.readouterr().err
    # a gate that compared nothing has not passed
    verdict = compare(base, base, column_directions(), [parse_tolerance("fid:+1", column_directions())])
    assert not verdict.passed and verdict.failures[0].startswith("nothing was compared")


def test_default_tolerances_come_from_the_seed_spread(gate_suite, tmp_path, capsys):
    runs = []
    for first in (0, 1000, 2000):
        code, frame = _run(tmp_path, f"s{first}", "--first-seed", str(first))
        assert code == 0
        runs.append(frame)
    spread = spread_table(runs, column_directions())
    w2 = spread[(spread["metric"] == "w2") & (spread["solver"] == "euler") & (spread["steps"] == 4)]
    assert len(w2) == 1 and w2["sd"].iloc[0] > 0 and w2["runs"].iloc[0] == 3
    nfe = spread[(spread["metric"] == "nfe") & (spread["solver"] == "euler")]
    assert (nfe["sd"] == 0).all()                                      # fixed grids: any change in NFE fails
    assert main(["spread", str(tmp_path / "s0"), str(tmp_path / "s1000"), str(tmp_path / "s2000"),
                 "--out", str(tmp_path / "baseline-spread.csv"), "--nuisance", "seeds"]) == 0
    runs[0].to_csv(tmp_path / "baseline.csv", index=False)
    code, _ = _run(tmp_path, "check", "--check", str(tmp_path / "baseline.csv"))
    assert code == 0 and "3 sd of" in capsys.readouterr().err
    with pytest.raises(ValueError, match="different seeds"):
        spread_table([runs[0], runs[0]], column_directions())
    stale = pd.read_csv(tmp_path / "baseline-spread.csv").assign(suite_version=99)   # recorded for another version
    stale.to_csv(tmp_path / "baseline-spread.csv", index=False)
    with pytest.raises(SystemExit):
        main(["--suite", "toy2d-gate", "--check", str(tmp_path / "baseline.csv"), "--dry-run"])
    assert f"the spread file is for suite_version 99, the baseline for {gate_suite.version}" in capsys.readouterr().err


def test_retrain_spread_needs_the_same_seeds_and_another_setup(gate_suite, tmp_path, capsys):
    code, one = _run(tmp_path, "t1", "--threads", "1")
    code2, two = _run(tmp_path, "t2", "--threads", "2")
    assert code == code2 == 0
    spread = spread_table([one, two], column_directions(), "retrain")
    assert (spread["nuisance"] == "retrain").all() and (spread["sd"] == 0).all()   # same seeds, same code: identical
    with pytest.raises(ValueError, match="all made alike"):
        spread_table([one, one], column_directions(), "retrain")
    _, other_seeds = _run(tmp_path, "s5", "--first-seed", "5000", "--threads", "2")
    with pytest.raises(ValueError, match="same seeds"):
        spread_table([one, other_seeds], column_directions(), "retrain")
    with pytest.raises(ValueError, match="nuisance must be one of"):
        spread_table([one, two], column_directions(), "weather")
    # a zero retrain spread still tolerates RETRAIN_FLOOR of each value, and says so
    from rfbench.results.gate import RETRAIN_FLOOR
    spread.to_csv(tmp_path / "baseline-spread.csv", index=False)
    one.to_csv(tmp_path / "baseline.csv", index=False)
    code, _ = _run(tmp_path, "check", "--threads", "1", "--check", str(tmp_path / "baseline.csv"))
    assert code == 0 and f"at least {100 * RETRAIN_FLOOR:g}% of each value" in capsys.readouterr().err
    worse = one.copy()
    worse.loc[worse["model"] == "pull", "w2"] *= 1 + 1.5 * RETRAIN_FLOOR
    verdict = compare(worse, one, column_directions(), spread=spread)
    assert len(verdict.failures) == 3 and all("retrain floor" in f for f in verdict.failures)
    bad = spread.assign(nuisance="sunspots")
    with pytest.raises(GateMismatch, match="column nuisance holds 'sunspots'"):
        compare(one, one, column_directions(), spread=bad)


def test_sample_grid_rows_spread_over_distinct_nfes():
    from rfbench.results.plots import grid_rows
    nfes = [1, 2, 4, 8, 16, 2, 3, 6, 12, 24, 127]        # euler 1..16, heun (2 NFE per step), rk45
    assert [nfes[i] for i in grid_rows(nfes, 4)] == [1, 4, 12, 127]   # cheapest and dearest always in
    assert grid_rows([1, 1, 2], 4) == [0, 2]                          # one row per distinct NFE, first cell kept
    assert grid_rows([5.0, float("nan")], 4) == [0]
    assert [nfes[i] for i in grid_rows(nfes, 1)] == [1]
    with pytest.raises(ValueError, match="rows must be >= 1"):
        grid_rows(nfes, 0)


def test_the_toy2d_gate_fails_a_ten_percent_regression_of_one_model():
    """results/toy2d.csv against itself passes with its recorded retrain spread; the same table with one model's w2
    (or energy) 10% worse in every cell fails on exactly those cells. (That a retrain on 1 thread with ATen's default
    kernels passes is .ci/run's last step.)"""
    from pathlib import Path

    from rfbench.results.gate import spread_path
    baseline_path = Path(__file__).resolve().parents[1] / "results" / "toy2d.csv"
    baseline, spread = pd.read_csv(baseline_path), pd.read_csv(spread_path(baseline_path))
    assert (spread["nuisance"] == "retrain").all() and spread["runs"].min() >= 3
    directions = column_directions()
    assert compare(baseline, baseline, directions, spread=spread).passed
    for metric in ("w2", "energy"):
        for model in ("1-rf", "2-rf", "2-rf-distill", "ddpm"):
            doctored = baseline.copy()
            rows = (doctored["model"] == model) & doctored[metric].notna()
            doctored.loc[rows, metric] += 0.1 * doctored.loc[rows, metric].abs()      # 10% worse (lower is better)
            verdict = compare(doctored, baseline, directions, spread=spread)
            failed = [f for f in verdict.failures if f" {metric}: " in f]
            assert len(failed) == len(verdict.failures) == rows.sum() > 0, (metric, model, verdict.failures)

"""Which solver wins at each budget (`rfbench table RESULTS --best-by METRIC`): per NFE budget and model, the best
finished cell within the budget and its runner-up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rfbench.cli import main
from rfbench.results.report import best_within_budgets, render_budgets


def _results() -> pd.DataFrame:
    rows = [  # model, solver, steps, grid, nfe, fid, fid_se, is, status
        ("1-rf", "euler", 2, "uniform", 2, 40.0, 1.0, 5.0, "ok"),
        ("1-rf", "unipc", 2, "logsnr", 2, 30.0, 1.0, 6.0, "ok"),
        ("1-rf", "euler", 4, "uniform", 4, 20.0, 1.0, 7.0, "ok"),
        ("1-rf", "edm-heun", 2, "karras", 3, 10.0, 1.0, 4.0, "failed"),     # failed cells never win
        ("1-rf", "heun", 2, "uniform", 4, 25.0, 1.0, 9.0, "ok"),
        ("1-rf", "rk45", np.nan, np.nan, 120, 2.0, 0.5, 9.5, "ok"),
        ("2-rf", "euler", 1, "uniform", 1, 12.0, 1.0, 8.0, "ok"),
        ("independent", np.nan, np.nan, np.nan, np.nan, 0.5, 0.1, 11.0, "ok"),   # real data, not a method
    ]
    return pd.DataFrame(rows, columns=["model", "solver", "steps", "grid", "nfe", "fid", "fid_se", "is", "status"])


def test_the_best_cell_within_each_budget_per_model_and_its_runner_up():
    table = best_within_budgets(_results(), "fid", "lower", [2, 3, 4, 200])
    got = {(r.budget, r.model): (r.solver, r.nfe, r.fid, r.runner_up, r.cells) for r in table.itertuples()}
    assert got == {
        (2, "1-rf"): ("unipc", 2, 30.0, "euler 2", 2), (2, "2-rf"): ("euler", 1, 12.0, "", 1),
        (3, "1-rf"): ("unipc", 2, 30.0, "euler 2", 2), (3, "2-rf"): ("euler", 1, 12.0, "", 1),
        (4, "1-rf"): ("euler", 4, 20.0, "heun 2", 4), (4, "2-rf"): ("euler", 1, 12.0, "", 1),
        (200, "1-rf"): ("rk45", 120, 2.0, "euler 4", 5), (200, "2-rf"): ("euler", 1, 12.0, "", 1)}
    # a higher-is-better metric ranks the other way; no budget below the cheapest cell gives a row
    higher = best_within_budgets(_results(), "is", "higher", [1, 4])
    assert [(r.budget, r.model, r.solver, r.steps) for r in higher.itertuples()] == [
        (1, "2-rf", "euler", 1), (4, "1-rf", "heun", 2), (4, "2-rf", "euler", 1)]
    # default budgets: every NFE of the finished cells
    assert sorted(set(best_within_budgets(_results(), "fid", "lower")["budget"])) == [1, 2, 4, 120]
    text = render_budgets(table, "fid")
    assert "| 4            | 1-rf     | euler 4          | 4     | 20 ± 1  | heun 2: 25" in text
    assert "unipc 2 (logsnr)" in text


def test_bad_metrics_and_budgets_are_one_line_each(tmp_path, capsys):
    with pytest.raises(ValueError, match="no values of 'w2' in these results to rank by; columns with values: "):
        best_within_budgets(_results(), "w2", "lower")
    with pytest.raises(ValueError, match="a budget is a number of function evaluations > 0, got -1"):
        best_within_budgets(_results(), "fid", "lower", [4, -1])
    path = tmp_path / "results.csv"
    _results().to_csv(path, index=False)
    assert main(["table", str(path), "--best-by", "fid", "--budgets", "2", "4"]) == 0
    out = capsys.readouterr().out
    assert "NFE budget" in out and "unipc 2 (logsnr)" in out and "rk45" not in out
    assert main(["table", str(path), "--best-by", "fid", "--format", "csv", "--output", str(tmp_path / "b.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "b.csv")) == 7      # budgets 1 (2-rf alone), 2, 4, 120
    for argv, message in (([ "--best-by", "nfe"], "--best-by 'nfe' is not a quality metric column; those are: "),
                          (["--budgets", "4"], "--budgets goes with --best-by METRIC")):
        with pytest.raises(SystemExit):
            main(["table", str(path), *argv])
        assert message in capsys.readouterr().err

"""A suite may leave a costly metric empty on the cells of some solvers (``Suite.skip_metrics``): toy2d computes w2's
exact solve only where the paper's claims use it, not on the fast solvers' cells."""

from __future__ import annotations

import math

import pytest
import torch

import rfbench
from rfbench.suites import SUITES, Cell
from tests.standins import registered, standin


class Rotate:
    """A linear flow (v = A x): every solver gives a different, finite answer."""

    input_shape = (2,)

    def __call__(self, x, t):
        return x @ torch.tensor([[0.0, 1.0], [-1.0, 0.0]]) + 0.5


def test_a_skipped_metric_is_empty_on_its_solvers_cells_and_computed_on_the_others(tmp_path):
    cells = (Cell("rot", "euler", 4), Cell("rot", "dpm++2m", 4), Cell("rot", "rk45"))
    suite = standin("toy2d", "toy2d-skip", {"rot": Rotate()}, cells, num_samples=200, independent_row=False,
                    metrics=("w2", "energy", "solver_error"), skip_metrics=(("w2", ("dpm++2m",)),))
    with registered(suite):
        frame = rfbench.run("toy2d-skip", out=tmp_path / "out", device="cpu", cache=tmp_path / "cache",
                            progress=False, plots=False)
    rows = frame.set_index("solver")
    assert (rows["status"] == "ok").all()
    assert math.isnan(rows.loc["dpm++2m", "w2"]) and math.isnan(rows.loc["dpm++2m", "w2_se"])
    assert rows.loc["dpm++2m", "energy"] > 0 and rows.loc["dpm++2m", "solver_error"] > 0   # the others are kept
    assert rows.loc["euler", "w2"] > 0 and rows.loc["rk45", "w2"] > 0


def test_toy2d_skips_w2_on_the_fast_solvers_only():
    toy2d = SUITES["toy2d"]
    skipped = {cell.solver for cell in toy2d.cells if "w2" in toy2d.skipped(cell)}
    assert skipped == {"dpm++2m", "dpm++3m", "unipc", "edm-heun", "ipndm", "deis", "euler-ancestral", "dpm++2m-sde"}
    kept = {(cell.model, cell.solver) for cell in toy2d.cells if not toy2d.skipped(cell)}
    # the cells of the claims that use w2: one euler step of each model, every flow's rk45
    assert {("1-rf", "euler"), ("2-rf", "euler"), ("2-rf-distill", "euler"), ("1-rf", "rk45"),
            ("2-rf", "rk45")} <= kept


@pytest.mark.parametrize("pairs, named", [((("w3", ("euler",)),), "'w3'"), ((("w2", "euler"),), "'euler'"),
                                          ((("w2", ("eulr",)),), "eulr")])
def test_a_bad_skip_is_refused_naming_it(pairs, named):
    import dataclasses
    with pytest.raises(ValueError, match="skip_metrics") as exc:
        dataclasses.replace(SUITES["toy2d"], name="toy2d-bad", skip_metrics=pairs)
    assert named in str(exc.value)

"""2D suites: Gaussian noise to a mixture (toy2d) and mixture to mixture (toy2d-transfer).

Expected on toy2d (the rectified-flow paper's claims, checked by tests/test_toy2d_suite.py): transport cost falls
1-RF > 2-RF > 3-RF; crossing probability falls sharply from the independent coupling to 1-RF; one-step w2 of 2-RF
is far below 1-RF's; the distilled 2-RF's one-step w2 is no worse than 2-RF's.
"""

from __future__ import annotations

from rfbench.data.toy import GaussianMixture, StandardNormal, ToyProblem, circle_mixture
from rfbench.suites.base import SUITES, Cell, Suite, fixed_grid

FLOW_STEPS = (1, 2, 4, 8, 16, 32)
COUPLING_METRICS = ("crossing_prob", "transport_cost", "straightness", "w2")


def _flow_cells(model: str) -> tuple[Cell, ...]:
    return fixed_grid(model, ("euler", "heun"), FLOW_STEPS) + (Cell(model, "rk45"),)


TOY2D = SUITES.add("toy2d", Suite(
    name="toy2d",
    version=1,
    description="N(0, I) -> 8 Gaussians on a circle (radius 4, std 0.3) in 2D; 1/2/3-RF, distilled 2-RF, DDPM",
    problem=ToyProblem(StandardNormal(2), circle_mixture(8, radius=4.0, std=0.3)),
    models=("1-rf", "2-rf", "3-rf", "2-rf-distill", "ddpm"),
    cells=(_flow_cells("1-rf") + _flow_cells("2-rf") + _flow_cells("3-rf")
           + (Cell("2-rf-distill", "euler", 1),)
           + fixed_grid("ddpm", ("ddim",), (4, 8, 16, 32, 100))
           + (Cell("ddpm", "ddpm", 1000), Cell("ddpm", "rk45"))),
    metrics=COUPLING_METRICS,
    num_samples=2000,
    independent_row=True,
))

TOY2D_TRANSFER = SUITES.add("toy2d-transfer", Suite(
    name="toy2d-transfer",
    version=1,
    description="data to data in 2D: 3 Gaussians on the left -> 2 Gaussians on the right; 1/2/3-RF",
    problem=ToyProblem(GaussianMixture(((-4.0, -3.0), (-4.0, 0.0), (-4.0, 3.0)), std=0.4),
                       GaussianMixture(((4.0, -2.0), (4.0, 2.0)), std=0.4)),
    models=("1-rf", "2-rf", "3-rf"),
    cells=_flow_cells("1-rf") + _flow_cells("2-rf") + _flow_cells("3-rf"),
    metrics=COUPLING_METRICS,
    num_samples=2000,
    independent_row=True,
))

"""2D suites: Gaussian noise to a mixture (toy2d), mixture to mixture (toy2d-transfer, toy2d-rings), with the
recipes of their models.

Expected on toy2d (the rectified-flow paper's claims, checked by tests/test_toy2d_suite.py): transport cost falls
1-RF > 2-RF > 3-RF; crossing probability falls sharply from the independent coupling to 1-RF; one-step w2 of 2-RF
is far below 1-RF's; the distilled 2-RF's one-step w2 is no worse than 2-RF's.
"""

from __future__ import annotations

from baselines.ddpm import DDPM, DDPMRecipe
from baselines.rectified_flow import FlowRecipe, IndependentDistill, RectifiedFlow
from rfbench.data.toy import GaussianMixture, StandardNormal, ToyProblem, circle_mixture
from rfbench.models import MLPConfig
from rfbench.suites import Cell, Suite, SuiteModel, fixed_grid, register_suite
from rfbench.training import TrainConfig

FLOW_STEPS = (1, 2, 4, 8, 16, 32)
DDIM_STEPS = (4, 8, 16, 32, 100)
FAST_STEPS = (2, 4, 8, 16)          # DPM-Solver++, UniPC: NFE = steps
EDM_STEPS = (2, 4, 8)               # EDM's Heun: NFE 3, 7, 15 on the flows, 5, 9, 17 on the DDPM
MULTISTEP = ("ipndm", "deis")       # on their default grids: karras, and time_uniform rho = 2 (diff-sampler's DEIS)
STOCHASTIC = ("euler-ancestral", "dpm++2m-sde")    # on karras, as k-diffusion runs them; per-sample seeded noise
FAST_SOLVERS = ("dpm++2m", "dpm++3m", "unipc", "edm-heun") + MULTISTEP + STOCHASTIC
# w2's exact solve is the costliest metric of a toy2d cell, and on the fast solvers' cells it tells nothing: they
# sit at w2's finite-sample floor (the independent row's value) or far above it, where energy and solver_error (which
# ranks solvers) say the same. The paper's claims use w2 on euler, heun and rk45 cells, which keep it.
SKIP_W2 = (("w2", FAST_SOLVERS),)
COUPLING_METRICS = ("crossing_prob", "transport_cost", "straightness", "w2", "energy", "solver_error")

# Sized for a 2-core CPU: the whole toy2d suite, training included, in a few minutes from a cold cache
# (docs/speed.md has the measured times).
# EMA decay 0.99: with 2-3k steps, 0.999 averages over a third of training and lags the cosine-annealed weights
# (measured on toy2d-transfer 1-RF, w2 to held-out data: 0.98 with EMA 0.999 against 0.38 for the raw weights).
# Depth 4 and 3,000 reflow steps on 30,000 pairs: with depth 3 and 2,000 steps on 20,000 pairs, fitting error made
# the crossing probability rise with each reflow (0.0071, 0.0075, 0.0077 +- 0.0001 on 20,000 samples); here it
# stays level (0.0071, 0.0073, 0.0072), as it does for much larger training (256x4, 8,000 steps: 0.0070 each).
TOY_RECIPE = FlowRecipe(
    net=MLPConfig(hidden=128, depth=4),
    train=TrainConfig(steps=3000, batch_size=1024, lr=2e-3, ema_decay=0.99, seed=0),
    reflow=TrainConfig(steps=3000, batch_size=1024, lr=1e-3, ema_decay=0.99, seed=1),
    distill=TrainConfig(steps=2000, batch_size=1024, lr=1e-3, ema_decay=0.99, seed=2),
    num_pairs=30_000,
)
TOY_DDPM = DDPMRecipe()   # an MLP on timesteps / 1000, linear betas, T = 1000, 4,000 steps


def flow_cells(model: str) -> tuple[Cell, ...]:
    return fixed_grid(model, ("euler", "heun"), FLOW_STEPS) + (Cell(model, "rk45"),)


def fast_cells(model: str) -> tuple[Cell, ...]:
    """The field's fast solvers at small NFE: DPM-Solver++(2M, 3M) and UniPC on uniform and log-SNR grids, EDM's Heun
    on its karras grid, iPNDM and DEIS on theirs, and the stochastic samplers on karras."""
    return (fixed_grid(model, ("dpm++2m", "dpm++3m", "unipc"), FAST_STEPS, grids=("uniform", "logsnr"))
            + fixed_grid(model, ("edm-heun",), EDM_STEPS)
            + fixed_grid(model, MULTISTEP, FAST_STEPS) + fixed_grid(model, STOCHASTIC, FAST_STEPS, grids=("karras",)))


def reflows(recipe: FlowRecipe) -> tuple[SuiteModel, ...]:
    return tuple(SuiteModel(f"{k}-rf", RectifiedFlow(k, recipe)) for k in (1, 2, 3))


TOY2D = register_suite(Suite(
    name="toy2d",
    # v6: ipndm, deis and the stochastic samplers (the older cells unchanged but for edm-heun's round-off: every
    # solver now starts a karras grid from the same state); v5: no w2 on the fast solvers' cells; v4: energy,
    # 10,000 reference points, 100,000 crossing draws
    version=6,
    description="N(0, I) -> 8 Gaussians on a circle (radius 4, std 0.3) in 2D; 1/2/3-RF, distilled 2-RF, DDPM",
    problem=ToyProblem(StandardNormal(2), circle_mixture(8, radius=4.0, std=0.3)),
    models=reflows(TOY_RECIPE) + (SuiteModel("2-rf-distill", RectifiedFlow(2, TOY_RECIPE, distilled=True)),
                                  SuiteModel("ddpm", DDPM(TOY_DDPM))),
    cells=(flow_cells("1-rf") + fast_cells("1-rf") + flow_cells("2-rf") + fast_cells("2-rf") + flow_cells("3-rf")
           + fast_cells("3-rf")
           + (Cell("2-rf-distill", "euler", 1),)
           + fixed_grid("ddpm", ("ddim",), DDIM_STEPS)
           + (Cell("ddpm", "ddpm", 1000), Cell("ddpm", "rk45")) + fast_cells("ddpm")),
    metrics=COUPLING_METRICS,
    skip_metrics=SKIP_W2,
    num_samples=2000,
    independent_row=True,
    repeats=3,    # sampling takes seconds here: three timed runs per cell, their median
    steps=(("fixed", FLOW_STEPS), ("discrete", DDIM_STEPS)),
))

TOY2D_TRANSFER = register_suite(Suite(
    name="toy2d-transfer",
    version=6,    # v6: ipndm, deis, stochastic samplers; v5: no w2 on the fast solvers' cells; v4: energy
    description="data to data in 2D: 3 Gaussians on the left -> 2 Gaussians on the right; 1/2/3-RF",
    problem=ToyProblem(GaussianMixture(((-4.0, -3.0), (-4.0, 0.0), (-4.0, 3.0)), std=0.4),
                       GaussianMixture(((4.0, -2.0), (4.0, 2.0)), std=0.4)),
    models=reflows(TOY_RECIPE),
    cells=sum((flow_cells(m) + fast_cells(m) for m in ("1-rf", "2-rf", "3-rf")), ()),
    metrics=COUPLING_METRICS,
    skip_metrics=SKIP_W2,
    num_samples=2000,
    independent_row=True,
    repeats=3,    # sampling takes seconds here: three timed runs per cell, their median
    steps=(("fixed", FLOW_STEPS),),
))

# toy2d-rings: 4 Gaussians on a ring of radius 2 fanning out to 12 on a ring of radius 5 (rotated 15 degrees, so
# that no target mode lies straight out from a source mode). 1-RF's paths bend, so its coupling still crosses often
# (about 0.028 against 0.25 for the independent coupling) and each reflow lowers both the crossing probability and
# the transport cost by many standard errors, as in the paper's 2D figures; on toy2d 1-RF hardly crosses at all.
# 10,000 samples: crossing probability's standard error is set by the samples, not the draws (metrics/coupling.py),
# and 2-RF -> 3-RF differs by about 0.001. w2 is left out (its exact solve on 10,000 points costs minutes per cell);
# the energy distance scores sample quality. Chosen among 14 candidate problems by the crossing rate of 1-RF and
# the resolution of each reflow's drop.
RINGS_STEPS = (1, 2, 4, 8, 16)
TOY2D_RINGS = register_suite(Suite(
    name="toy2d-rings",
    # v2: ipndm, deis and the stochastic samplers (which assume a Gaussian source: here they show what that costs)
    version=2,
    description="data to data in 2D: 4 Gaussians on a ring of radius 2 -> 12 on a ring of radius 5 (std 0.3); "
                "1/2/3-RF, 1-RF and 2-RF distilled, and the independent coupling distilled",
    problem=ToyProblem(circle_mixture(4, radius=2.0, std=0.3), circle_mixture(12, radius=5.0, std=0.3, offset_deg=15)),
    models=(reflows(TOY_RECIPE)
            + tuple(SuiteModel(f"{k}-rf-distill", RectifiedFlow(k, TOY_RECIPE, distilled=True)) for k in (1, 2))
            + (SuiteModel("indep-distill", IndependentDistill(TOY_RECIPE)),)),
    cells=(sum((fixed_grid(m, ("euler",), RINGS_STEPS) + (Cell(m, "rk45"),) for m in ("1-rf", "2-rf", "3-rf")), ())
           + sum((fixed_grid(m, MULTISTEP, FAST_STEPS) + fixed_grid(m, STOCHASTIC, FAST_STEPS, grids=("karras",))
                  for m in ("1-rf", "2-rf", "3-rf")), ())
           + tuple(Cell(m, "euler", 1) for m in ("1-rf-distill", "2-rf-distill", "indep-distill"))),
    metrics=("crossing_prob", "transport_cost", "straightness", "energy", "solver_error"),
    num_samples=10_000,
    independent_row=True,
    solver_error_samples=2000,
    quality_metric="energy",
    steps=(("fixed", RINGS_STEPS),),
))

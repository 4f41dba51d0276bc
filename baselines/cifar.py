"""The cifar suite: Table 1 of the rectified-flow paper from the published checkpoints (nothing is trained).

Each model is a :class:`~rfbench.models.sources.CheckpointSlot`: the run gives its file (``--checkpoint-dir`` holding
``1-rf.pth`` ..., or ``--checkpoint MODEL=PATH``), read by :mod:`rfbench.models.formats`:

* ``1-rf``, ``2-rf``, ``3-rf`` (flows) and ``2-rf-distill``, ``3-rf-distill`` (one step): gnobitab/RectifiedFlow's
  files, EMA weights, on t in [1e-3, 1] (:class:`~rfbench.models.score_sde.TimeWindowFlow`);
* ``vp-ode``, ``subvp-ode``: score-SDE's continuous VP / sub-VP DDPM++ files, sampled through their probability-flow
  ODE (:class:`~rfbench.models.score_sde.VPSDEFlow`);
* ``ddpm``: a diffusers ``UNet2DModel`` folder (e.g. a local copy of google/ddpm-cifar10-32) with its scheduler
  config, sampled by ddim and ddpm (needs diffusers);
* any of them as an rfbench checkpoint: rebuilt from the config inside the file.
"""

from __future__ import annotations

from rfbench.data.images import ImageProblem
from rfbench.models import NCSNppConfig
from rfbench.models.sources import CheckpointSlot
from rfbench.suites import Cell, Suite, SuiteModel, fixed_grid, register_suite

IMAGE_METRICS = ("fid", "inception_score", "precision_recall", "kid", "crossing_prob", "transport_cost",
                 "straightness", "solver_error")
PUBLISHED = NCSNppConfig(dropout=0.15)      # the published CIFAR-10 DDPM++ (dropout is inactive when sampling)
CIFAR_EULER = (1, 2, 4, 8, 16, 32, 64, 100)
CIFAR_HEUN = (1, 2, 4, 8, 16, 32, 50)        # 2 NFE per step (the last step's second evaluation included)
CIFAR_DDIM = (10, 20, 50, 100)               # the DDPM baseline (a diffusers UNet2DModel folder), and ddpm 1000
FAST_FLOW_STEPS = (2, 4, 6, 8, 10)           # DPM-Solver++ and UniPC on the rectified flows: NFE = steps
FAST_VP_STEPS = (10, 20)                     # ... on score-SDE's VP model, as DPM-Solver's and UniPC's tables


def published_models(network: NCSNppConfig = PUBLISHED) -> tuple[SuiteModel, ...]:
    """The models of Table 1 as checkpoint slots (``network``: the DDPM++ of their official files)."""
    def slot(kind, flavor, what):
        return CheckpointSlot(kind, flavor, network, description=f"{kind}, {what} (a published checkpoint)")
    return (tuple(SuiteModel(f"{k}-rf", slot("flow", "rf", f"{k}-rectified flow")) for k in (1, 2, 3))
            + tuple(SuiteModel(f"{k}-rf-distill", slot("one-step", "rf", f"{k}-rf distilled")) for k in (2, 3))
            + (SuiteModel("vp-ode", slot("flow", "vp", "score-SDE VP DDPM++ (continuous), probability-flow ODE")),
               SuiteModel("subvp-ode", slot("flow", "subvp", "score-SDE sub-VP DDPM++, probability-flow ODE")),
               SuiteModel("ddpm", CheckpointSlot("diffusion", description="diffusion, a diffusers UNet2DModel "
                                                 "folder (e.g. google/ddpm-cifar10-32)", folder=True))))


def cifar_cells() -> tuple[Cell, ...]:
    cells: tuple[Cell, ...] = ()
    for model in ("1-rf", "2-rf", "3-rf"):
        cells += ((Cell(model, "rk45"),) + fixed_grid(model, ("euler",), CIFAR_EULER)
                  + fixed_grid(model, ("heun",), CIFAR_HEUN))
        cells += (fixed_grid(model, ("dpm++2m", "dpm++3m", "unipc"), FAST_FLOW_STEPS, grids=("logsnr",))
                  + fixed_grid(model, ("edm-heun",), (2, 3, 4, 5)))             # NFE 3, 5, 7, 9
    cells += (Cell("2-rf-distill", "euler", 1), Cell("3-rf-distill", "euler", 1))
    cells += (Cell("vp-ode", "rk45"), Cell("subvp-ode", "rk45"))
    # the rows of DPM-Solver (FID 4.70 at 10 NFE, 2.87 at 20), UniPC (3.87 at 10), EDM's Heun at 35 NFE on VP
    # (EDM's num_steps 18: 17 Heun steps on VP's karras grid and its final Euler step to sigma = 0)
    cells += (fixed_grid("vp-ode", ("dpm++2m", "dpm++3m", "unipc"), FAST_VP_STEPS, grids=("logsnr",))
              + (Cell("vp-ode", "edm-heun", 17),))
    return cells + fixed_grid("ddpm", ("ddim",), CIFAR_DDIM) + (Cell("ddpm", "ddpm", 1000),)


CIFAR = register_suite(Suite(
    name="cifar",
    # v2: the DDPM baseline (ddim, ddpm) from a diffusers folder; v3: the fast solvers on the flows and the VP model,
    # and solver_error; the other cells are unchanged
    version=3,
    description="N(0, I) -> CIFAR-10 32x32 (--data-dir): the published 1/2/3-RF, distilled and score-SDE VP/sub-VP "
                "DDPM++ checkpoints, a diffusers DDPM (--checkpoint-dir); FID/IS/precision/recall on Inception; "
                "a GPU's work",
    problem=ImageProblem("cifar10", (3, 32, 32)),
    models=published_models(),
    cells=cifar_cells(),
    metrics=IMAGE_METRICS,
    num_samples=50_000,
    independent_row=True,
    straightness_samples=1000,
    solver_error_samples=1000,
    extractor="inception",
    quality_metric="fid",
    batch_size=1000,
    steps=(("fixed", CIFAR_EULER), ("discrete", CIFAR_DDIM)),
))

"""Image suites trained by rfbench (digits, mnist, fashion-mnist): rectified flows, reflows, a distilled one-step
model and a DDPM baseline trained on real images, scored with image metrics on a feature extractor; with the
recipes of their models.

Expected on digits (the rectified-flow paper's claims, checked by tests/test_digits_suite.py): one-step FID of
2-RF far below 1-RF's; the distilled 2-RF's one-step FID no worse than 2-RF's; transport cost falls from 1-RF to
2-RF.
"""

from __future__ import annotations

from dataclasses import replace

from baselines.ddpm import DDPM, DDPMRecipe
from baselines.rectified_flow import FlowRecipe, RectifiedFlow
from baselines.toy2d import MULTISTEP, STOCHASTIC
from rfbench.data.images import ImageProblem
from rfbench.models import UNetConfig
from rfbench.suites import Cell, Suite, SuiteModel, fixed_grid, register_suite
from rfbench.training import TrainConfig

IMAGE_METRICS = ("fid", "inception_score", "precision_recall", "kid", "crossing_prob", "transport_cost",
                 "straightness", "solver_error")
FLOW_STEPS = (1, 2, 4, 8, 16)
DDIM_STEPS = (4, 8, 16, 32)
FAST_STEPS = (2, 4, 8, 16)          # DPM-Solver++(2M) and UniPC: NFE = steps; DPM-Solver++(3M) from 4
EDM_STEPS = (2, 4, 8)               # EDM's Heun: NFE 3, 7, 15 on the flows, 5, 9, 17 on the DDPM

# digits (8x8): a 177k-parameter U-Net (~100 ms per training step of 128 on 2 cores), sized so the whole suite runs
# in minutes on 2 CPU cores from a cold cache (docs/speed.md). 1,500 steps of 1-RF gave heun-8 FID 8.6 and rk45
# FID 6.0 against the training set (1,000 samples; held-out real images give 13.4 on 360 images), so 1,200 lose
# little. Reflow and distillation start from the parent's weights and converge fast (reflow loss 0.46 after 1,000
# steps). Reflow pairs with rk45 at rtol = atol = 1e-3 (38 NFE, against ~250 at 1e-5).
DIGITS_RECIPE = FlowRecipe(
    net=UNetConfig(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,)),
    train=TrainConfig(steps=1200, batch_size=128, lr=2e-3, ema_decay=0.995, seed=0),
    reflow=TrainConfig(steps=600, batch_size=128, lr=1e-3, ema_decay=0.99, seed=1),
    distill=TrainConfig(steps=500, batch_size=128, lr=1e-3, ema_decay=0.99, seed=2),
    num_pairs=3000,
    pair_rtol=1e-3,
    pair_atol=1e-3,
)
DIGITS_DDPM = DDPMRecipe(net=UNetConfig(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2),
                                        num_res_blocks=1, attn_resolutions=(4,), time_scale=1.0),
                         train=TrainConfig(steps=1200, batch_size=128, lr=2e-3, ema_decay=0.995, seed=3))
# mnist and fashion-mnist (28x28): sized for a GPU (the 1.1M-parameter U-Net takes ~2 s per training step of 128
# on 2 CPU cores, ~7 ms per image per evaluation). 1-RF 20k steps, each reflow 10k on 50k pairs, distillation 10k;
# the DDPM has the flows' U-Net with a timestep embedding, 20k steps.
MNIST_NET = UNetConfig(image_size=28, in_channels=1, channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                       attn_resolutions=(7,))
MNIST_RECIPE = FlowRecipe(
    net=MNIST_NET,
    train=TrainConfig(steps=20_000, batch_size=128, lr=5e-4, ema_decay=0.9995, seed=0),
    reflow=TrainConfig(steps=10_000, batch_size=128, lr=2e-4, ema_decay=0.999, seed=1),
    distill=TrainConfig(steps=10_000, batch_size=128, lr=2e-4, ema_decay=0.999, seed=2),
    num_pairs=50_000,
    pair_rtol=1e-3,
    pair_atol=1e-3,
    pair_batch=5000,
)
MNIST_DDPM = DDPMRecipe(net=replace(MNIST_NET, time_scale=1.0),
                        train=TrainConfig(steps=20_000, batch_size=128, lr=5e-4, ema_decay=0.9995, seed=3))


def flow_cells(model: str) -> tuple[Cell, ...]:
    return fixed_grid(model, ("euler", "heun"), FLOW_STEPS) + (Cell(model, "rk45"),)


def image_models(flows: FlowRecipe, ddpm: DDPMRecipe) -> tuple[SuiteModel, ...]:
    """1/2/3-RF, the distilled 2-RF and the DDPM of a suite's recipes."""
    return (tuple(SuiteModel(f"{k}-rf", RectifiedFlow(k, flows)) for k in (1, 2, 3))
            + (SuiteModel("2-rf-distill", RectifiedFlow(2, flows, distilled=True)), SuiteModel("ddpm", DDPM(ddpm))))


def fast_cells(model: str) -> tuple[Cell, ...]:
    """The field's fast solvers at small NFE on uniform and log-SNR grids (EDM's Heun on its karras grid, iPNDM and
    DEIS on theirs, the stochastic samplers on karras)."""
    return (fixed_grid(model, ("dpm++2m", "unipc"), FAST_STEPS, grids=("uniform", "logsnr"))
            + fixed_grid(model, ("dpm++3m",), FAST_STEPS[1:], grids=("uniform", "logsnr"))
            + fixed_grid(model, ("edm-heun",), EDM_STEPS)
            + fixed_grid(model, MULTISTEP, FAST_STEPS) + fixed_grid(model, STOCHASTIC, FAST_STEPS, grids=("karras",)))


def image_cells() -> tuple[Cell, ...]:
    return (flow_cells("1-rf") + fast_cells("1-rf") + flow_cells("2-rf") + fast_cells("2-rf") + flow_cells("3-rf")
            + fast_cells("3-rf")
            + (Cell("2-rf-distill", "euler", 1),)
            + fixed_grid("ddpm", ("ddim",), DDIM_STEPS)
            + (Cell("ddpm", "ddpm", 100),) + fast_cells("ddpm"))


DIGITS = register_suite(Suite(
    name="digits",
    # v2: the independent row holds each held-out image once (360), not 1,000 draws with repeats; v3: the fast solvers
    # (dpm++2m/3m, unipc, edm-heun) and solver_error, the v2 cells unchanged; v4: ipndm, deis and the stochastic
    # samplers (edm-heun's cells move by round-off: every solver now starts a karras grid from the same state)
    version=4,
    description="N(0, I) -> sklearn's 8x8 digits (1,437 training images); U-Nets trained on the CPU; "
                "FID/IS/precision/recall on the digits CNN",
    problem=ImageProblem("digits", (1, 8, 8)),
    models=image_models(DIGITS_RECIPE, DIGITS_DDPM),
    cells=image_cells(),
    metrics=IMAGE_METRICS,
    num_samples=1000,
    independent_row=True,
    straightness_samples=250,
    solver_error_samples=250,
    extractor="digits",
    quality_metric="fid",
    bootstrap=100,   # fid_se, is_se, recall_se, kid_se: about 1.5 s per cell on 2 CPU cores (128-d features)
    steps=(("fixed", FLOW_STEPS), ("discrete", DDIM_STEPS)),
))


def _mnist_family(name: str, title: str) -> Suite:
    return Suite(
        name=name,
        version=3,                 # v3: ipndm, deis, stochastic samplers; v2: the fast solvers and solver_error
        description=f"N(0, I) -> {title} 28x28 (60,000 training images; --data-dir); U-Nets sized for a GPU; "
                    f"FID/IS/precision/recall on Inception (else a classifier trained by rfbench)",
        problem=ImageProblem(name, (1, 28, 28)),
        models=image_models(MNIST_RECIPE, MNIST_DDPM),
        cells=image_cells(),
        metrics=IMAGE_METRICS,
        num_samples=10_000,        # a GPU's default; on a CPU pass --num-samples (each row records its count)
        independent_row=True,
        straightness_samples=1000,
        solver_error_samples=1000,
        extractor="inception",
        fallback_extractor="classifier",
        quality_metric="fid",
        steps=(("fixed", FLOW_STEPS), ("discrete", DDIM_STEPS)),
    )


MNIST = register_suite(_mnist_family("mnist", "MNIST"))
FASHION_MNIST = register_suite(_mnist_family("fashion-mnist", "Fashion-MNIST"))

"""Image suites (digits, mnist, fashion-mnist, cifar): rectified flows, reflows, a distilled one-step model and a DDPM baseline trained by rfbench on real
images, scored with image metrics on a feature extractor.

Expected on digits (the rectified-flow paper's claims, checked by tests/test_digits_suite.py): one-step FID of
2-RF far below 1-RF's; the distilled 2-RF's one-step FID no worse than 2-RF's; transport cost falls from 1-RF to
2-RF.
"""

from __future__ import annotations

from rfbench.data.images import ImageProblem
from rfbench.suites.base import SUITES, Cell, Suite, fixed_grid

IMAGE_METRICS = ("fid", "inception_score", "precision_recall", "kid", "crossing_prob", "transport_cost",
                 "straightness")
FLOW_STEPS = (1, 2, 4, 8, 16)


def flow_cells(model: str) -> tuple[Cell, ...]:
    return fixed_grid(model, ("euler", "heun"), FLOW_STEPS) + (Cell(model, "rk45"),)


def image_cells() -> tuple[Cell, ...]:
    return (flow_cells("1-rf") + flow_cells("2-rf") + flow_cells("3-rf")
            + (Cell("2-rf-distill", "euler", 1),)
            + fixed_grid("ddpm", ("ddim",), (4, 8, 16, 32))
            + (Cell("ddpm", "ddpm", 100),))


DIGITS = SUITES.add("digits", Suite(
    name="digits",
    version=2,    # v2: the independent row holds each held-out image once (360), not 1,000 draws with repeats
    description="N(0, I) -> sklearn's 8x8 digits (1,437 training images); U-Nets trained on the CPU; "
                "FID/IS/precision/recall on the digits CNN",
    problem=ImageProblem("digits", (1, 8, 8)),
    models=("1-rf", "2-rf", "3-rf", "2-rf-distill", "ddpm"),
    cells=image_cells(),
    metrics=IMAGE_METRICS,
    num_samples=1000,
    independent_row=True,
    straightness_samples=250,
    extractor="digits",
    quality_metric="fid",
    bootstrap=100,   # fid_se, is_se, recall_se, kid_se: about 1.5 s per cell on 2 CPU cores (128-d features)
))


def _mnist_family(name: str, title: str) -> Suite:
    return Suite(
        name=name,
        version=1,
        description=f"N(0, I) -> {title} 28x28 (60,000 training images; --data-dir); U-Nets sized for a GPU; "
                    f"FID/IS/precision/recall on Inception (else a classifier trained by rfbench)",
        problem=ImageProblem(name, (1, 28, 28)),
        models=("1-rf", "2-rf", "3-rf", "2-rf-distill", "ddpm"),
        cells=image_cells(),
        metrics=IMAGE_METRICS,
        num_samples=10_000,        # a GPU's default; on a CPU pass --num-samples (each row records its count)
        independent_row=True,
        straightness_samples=1000,
        extractor="inception",
        fallback_extractor="classifier",
        quality_metric="fid",
    )


MNIST = SUITES.add("mnist", _mnist_family("mnist", "MNIST"))
FASHION_MNIST = SUITES.add("fashion-mnist", _mnist_family("fashion-mnist", "Fashion-MNIST"))


# cifar: Table 1 of the rectified-flow paper from the published checkpoints (nothing is trained).
CIFAR_EULER = (1, 2, 4, 8, 16, 32, 64, 100)
CIFAR_HEUN = (1, 2, 4, 8, 16, 32, 50)        # 2 NFE per step (the last step's second evaluation included)
CIFAR_DDIM = (10, 20, 50, 100)               # the DDPM baseline (a diffusers UNet2DModel folder), and ddpm 1000


def cifar_cells() -> tuple[Cell, ...]:
    cells: tuple[Cell, ...] = ()
    for model in ("1-rf", "2-rf", "3-rf"):
        cells += ((Cell(model, "rk45"),) + fixed_grid(model, ("euler",), CIFAR_EULER)
                  + fixed_grid(model, ("heun",), CIFAR_HEUN))
    cells += (Cell("2-rf-distill", "euler", 1), Cell("3-rf-distill", "euler", 1))
    cells += (Cell("vp-ode", "rk45"), Cell("subvp-ode", "rk45"))
    return cells + fixed_grid("ddpm", ("ddim",), CIFAR_DDIM) + (Cell("ddpm", "ddpm", 1000),)


CIFAR = SUITES.add("cifar", Suite(
    name="cifar",
    version=2,    # v2: the DDPM baseline (ddim, ddpm) from a diffusers folder; the other cells are unchanged
    description="N(0, I) -> CIFAR-10 32x32 (--data-dir): the published 1/2/3-RF, distilled and score-SDE VP/sub-VP "
                "DDPM++ checkpoints, a diffusers DDPM (--checkpoint-dir); FID/IS/precision/recall on Inception; "
                "a GPU's work",
    problem=ImageProblem("cifar10", (3, 32, 32)),
    models=("1-rf", "2-rf", "3-rf", "2-rf-distill", "3-rf-distill", "vp-ode", "subvp-ode", "ddpm"),
    cells=cifar_cells(),
    metrics=IMAGE_METRICS,
    num_samples=50_000,
    independent_row=True,
    straightness_samples=1000,
    extractor="inception",
    quality_metric="fid",
    batch_size=1000,
    checkpoint_only=True,
))

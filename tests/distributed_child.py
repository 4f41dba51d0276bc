"""The CLI with a stand-in image suite, for tests/test_distributed.py: ``python -m tests.distributed_child ARGS`` or
``torchrun --nproc_per_node=N -m tests.distributed_child ARGS``.

The suite ``digits-dist`` scores analytic models on sklearn's digits with the real digits extractor (no training
beyond the extractor's): a nonlinear flow (euler, heun, rk45), a DDPM-style model sampled by the stochastic ddpm
sampler (seeded per-step noise), and ``spike``, a flow that returns NaN for the one seed with the largest first
pixel, so that exactly one process's share fails.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from baselines import BASELINES, Baseline
from rfbench.cli import main
from rfbench.models import DiffusionModel, linear_betas
from rfbench.suites import SUITES, Cell

NUM_SAMPLES = 64


class Wave:
    """dx/dt = sin(3x + 2t) - x/2: smooth, nonlinear, so rk45 adapts its steps."""

    input_shape = (1, 8, 8)

    def __call__(self, x, t):
        return torch.sin(3 * x + 2 * t.reshape(-1, 1, 1, 1)) - 0.5 * x


class Spike:
    input_shape = (1, 8, 8)

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, x, t):
        bad = x[:, 0, 0, 0] >= self.threshold
        return torch.where(bad.reshape(-1, 1, 1, 1), torch.full_like(x, float("nan")), torch.zeros_like(x))


def _half(x, timesteps):
    return 0.5 * x


def register() -> None:
    base = SUITES["digits"]
    x0 = base.problem.initial(range(NUM_SAMPLES))
    threshold = float(x0[:, 0, 0, 0].max())          # only the last seed's share of the range reaches it
    loaders = {"wave": ("flow", lambda s, c, d: Wave()),
               "noisy": ("flow", lambda s, c, d: DiffusionModel(_half, linear_betas(100))),
               "spike": ("flow", lambda s, c, d: Spike(threshold))}
    for name, (kind, load) in loaders.items():
        BASELINES._items[name] = Baseline(name, kind, "distributed test stand-in", load)
    SUITES._items["digits-dist"] = dataclasses.replace(
        base, name="digits-dist", models=("wave", "noisy", "spike"), num_samples=NUM_SAMPLES,
        straightness_samples=16, straightness_steps=8, batch_size=8,
        cells=(Cell("wave", "euler", 2), Cell("wave", "heun", 3), Cell("wave", "rk45"), Cell("noisy", "ddpm", 10),
               Cell("spike", "euler", 1)))


if __name__ == "__main__":
    register()
    sys.exit(main(sys.argv[1:]))

"""The CLI with stand-in suites, for tests that run it in child processes (torchrun, SIGKILL):
``python -m tests.cli_child ARGS`` or ``torchrun --nproc_per_node=N -m tests.cli_child ARGS``.

The suite ``digits-dist`` scores analytic models on sklearn's digits with the real digits extractor (no training
beyond the extractor's): a nonlinear flow (euler, heun, rk45), a DDPM-style model sampled by the stochastic ddpm
sampler (seeded per-step noise), and ``spike``, a flow that returns NaN for the one seed with the largest first
pixel, so that exactly one process's share fails.

The suite ``toy2d-shard`` is toy2d with small recipes of 1-RF and 2-RF (trained in seconds, cached in ``--cache``)
and twelve cells, for the tests of sharded runs (tests/test_shard.py).

The suite ``toy-slow`` (2D) has eight cells of a constant flow whose every evaluation sleeps ``SLEEP`` seconds, so a
test can kill the run between cells; each evaluation appends a line to ``$RFBENCH_TEST_CALLS`` when it is set, so a
test can see which cells a rerun computed.
"""

from __future__ import annotations

import sys

import torch

from rfbench.cli import main
from rfbench.models import DiffusionModel, linear_betas
from rfbench.plugins import load_entry_points
from rfbench.suites import SUITES, Cell, register_suite
from tests.standins import standin

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


SLEEP = 0.1


class Slow:
    input_shape = (2,)

    def __call__(self, x, t):
        import os
        import time
        time.sleep(SLEEP)
        if os.environ.get("RFBENCH_TEST_CALLS"):
            with open(os.environ["RFBENCH_TEST_CALLS"], "a") as fh:
                fh.write(f"{x.shape[0]}\n")
        return torch.full_like(x, 0.5)


def _half(x, timesteps):
    return 0.5 * x


def register() -> None:
    load_entry_points()
    base = SUITES["digits"]
    x0 = base.problem.initial(range(NUM_SAMPLES))
    threshold = float(x0[:, 0, 0, 0].max())          # only the last seed's share of the range reaches it
    register_suite(standin(
        base, "digits-dist", {"wave": Wave(), "noisy": (DiffusionModel(_half, linear_betas(100)), "diffusion"),
                              "spike": Spike(threshold)},
        cells=(Cell("wave", "euler", 2), Cell("wave", "heun", 3), Cell("wave", "rk45"), Cell("noisy", "ddpm", 10),
               Cell("spike", "euler", 1)),
        num_samples=NUM_SAMPLES, straightness_samples=16, straightness_steps=8, batch_size=8))
    register_suite(standin(
        "toy2d", "toy-slow", {"slow": Slow()}, cells=tuple(Cell("slow", "euler", n) for n in range(1, 9)),
        num_samples=40, straightness_samples=4, straightness_steps=1, metrics=("w2", "transport_cost", "straightness")))
    register_suite(toy2d_shard())


def toy2d_shard():
    import dataclasses

    from baselines.rectified_flow import FlowRecipe, RectifiedFlow
    from rfbench.models import MLPConfig
    from rfbench.suites import SuiteModel, fixed_grid
    from rfbench.training import TrainConfig
    recipe = FlowRecipe(net=MLPConfig(hidden=32, depth=2), train=TrainConfig(steps=200, batch_size=256, seed=0),
                        reflow=TrainConfig(steps=100, batch_size=256, seed=1), num_pairs=1000)
    models = tuple(SuiteModel(f"{k}-rf", RectifiedFlow(k, recipe)) for k in (1, 2))
    cells = sum((fixed_grid(m.name, ("euler", "heun"), (1, 2, 4)) + (Cell(m.name, "rk45"),) for m in models), ())
    return dataclasses.replace(SUITES["toy2d"], name="toy2d-shard", models=models, cells=cells, num_samples=200,
                               repeats=1, solver_error_samples=50)


if __name__ == "__main__":
    register()
    sys.exit(main(sys.argv[1:]))

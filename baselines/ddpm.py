"""A DDPM-style baseline: an eps-prediction network trained with DDPM's loss (Ho et al. 2020) on the suite's data,
sampled by ddim, ddpm or its probability-flow ODE."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from rfbench.models import (DiffusionModel, MLPConfig, UNetConfig, alphas_cumprod, build_network, linear_betas,
                            network_input_shape, network_spec)
from rfbench.models.sources import Recipe
from rfbench.training import TrainConfig, ddpm_loss, fit, seeded_init


@dataclass(frozen=True)
class DDPMRecipe:
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    net: MLPConfig | UNetConfig = MLPConfig(hidden=128, depth=3, time_scale=1 / 1000)  # sees timesteps / T
    train: TrainConfig = TrainConfig(steps=4000, batch_size=1024, lr=2e-3, ema_decay=0.99, seed=3)

    def __post_init__(self):
        if isinstance(self.net, UNetConfig):   # the U-Net embeds raw timesteps, as DDPM's network does
            if self.net.time_scale != 1:
                raise ValueError(f"DDPMRecipe: a U-Net's time_scale must be 1 (it embeds timesteps in [0, T)), "
                                 f"got {self.net.time_scale:g}")
        elif abs(self.net.time_scale * self.num_timesteps - 1) > 1e-12:
            raise ValueError(f"DDPMRecipe: net.time_scale must be 1/num_timesteps = {1 / self.num_timesteps:g} so "
                             f"the network sees timesteps/T in [0, 1); got {self.net.time_scale:g}")


def load_ddpm(recipe: DDPMRecipe, problem, cache, device) -> DiffusionModel:
    """The DDPM of a recipe, trained on the problem's data on first use and cached."""
    betas = linear_betas(recipe.num_timesteps, recipe.beta_start, recipe.beta_end)
    spec = {"family": "ddpm", "model": "ddpm", "problem": problem.to_dict(),
            **asdict(recipe), "net": network_spec(recipe.net)}

    def train():
        start = time.perf_counter()
        loss = ddpm_loss(problem.train_target(), alphas_cumprod(betas))
        net = seeded_init(lambda: build_network(recipe.net), recipe.train.seed)
        with cache.progress.training("ddpm", recipe.train) as job:
            net, history = fit(net, loss, recipe.train, device, progress=job)
        return net, {"seconds": time.perf_counter() - start, "final_loss": history[-1], "loss_history": history}

    net = cache.network("ddpm", spec, lambda: build_network(recipe.net), train, device)
    return DiffusionModel(net, betas, prediction="eps")


@dataclass(frozen=True)
class DDPM(Recipe):
    """A suite's DDPM baseline: eps-prediction, linear betas."""

    recipe: DDPMRecipe = DDPMRecipe()
    kind = "diffusion"

    def spec(self) -> dict:
        return {"family": "ddpm", "model": "ddpm", "recipe": asdict(self.recipe)}

    def describe(self) -> str:
        return (f"diffusion, DDPM eps-prediction, linear betas, T={self.recipe.num_timesteps}, trained by rfbench "
                f"(recipe {self.recipe_hash()})")

    def input_shape(self, suite) -> tuple[int, ...]:
        return network_input_shape(self.recipe.net)

    def load(self, ctx) -> DiffusionModel:
        return load_ddpm(self.recipe, ctx.suite.problem, ctx.cache, ctx.device)

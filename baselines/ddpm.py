"""A DDPM-style baseline: an eps-prediction network trained with DDPM's loss on the suite's data."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from baselines import BASELINES, Baseline
from baselines.rectified_flow import MNIST_NET
from rfbench.models import (DiffusionModel, MLPConfig, UNetConfig, alphas_cumprod, build_network, linear_betas,
                            network_spec)
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


RECIPES: dict[str, DDPMRecipe] = {
    "toy2d": DDPMRecipe(),
    "digits": DDPMRecipe(net=UNetConfig(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2),
                                        num_res_blocks=1, attn_resolutions=(4,), time_scale=1.0),
                         train=TrainConfig(steps=1200, batch_size=128, lr=2e-3, ema_decay=0.995, seed=3)),
}
# mnist, fashion-mnist: the flows' U-Net (rectified_flow.MNIST_NET) with timestep embedding, 20k steps (GPU-sized)
_MNIST_DDPM = DDPMRecipe(net=replace(MNIST_NET, time_scale=1.0),
                         train=TrainConfig(steps=20_000, batch_size=128, lr=5e-4, ema_decay=0.9995, seed=3))
RECIPES["mnist"] = _MNIST_DDPM
RECIPES["fashion-mnist"] = _MNIST_DDPM


def load_ddpm(suite, cache, device) -> DiffusionModel:
    try:
        recipe = RECIPES[suite.name]
    except KeyError:
        raise KeyError(f"no ddpm recipe for suite {suite.name!r}; recipes exist for: {', '.join(sorted(RECIPES))}") \
            from None
    betas = linear_betas(recipe.num_timesteps, recipe.beta_start, recipe.beta_end)
    spec = {"family": "ddpm", "model": "ddpm", "problem": suite.problem.to_dict(),
            **asdict(recipe), "net": network_spec(recipe.net)}

    def train():
        start = time.perf_counter()
        loss = ddpm_loss(suite.problem.train_target(), alphas_cumprod(betas))
        net = seeded_init(lambda: build_network(recipe.net), recipe.train.seed)
        net, history = fit(net, loss, recipe.train, device)
        return net, {"seconds": time.perf_counter() - start, "final_loss": history[-1], "loss_history": history}

    net = cache.network("ddpm", spec, lambda: build_network(recipe.net), train, device)
    return DiffusionModel(net, betas, prediction="eps")


BASELINES.add("ddpm", Baseline("ddpm", "diffusion", "DDPM eps-prediction, linear betas, T=1000", load_ddpm))

"""DDPM-family samplers on a DiffusionModel's discrete schedule: DDIM and DDPM ancestral sampling.

Both visit the ``timesteps`` they are given in sampling order (decreasing; :func:`rfbench.samplers.grids.
discrete_timesteps`) and take their last step to alpha_bar = 1. The default spacing is DDIM's "uniform" skip,
tau_i = floor(i * T / S), i = 0..S-1; note that it never visits T-1: with S=1 the only timestep is 0, so one step
treats pure noise as nearly clean data; with S=4, T=1000 it starts at 750 (diffusers' "trailing" spacing starts at
T-1). The flow time reported to callbacks labels the S+1 states t = 1 - (tau + 1) / T (tau = -1 after the last
step, alpha_bar = 1), strictly increasing from about 0 to 1.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from rfbench.samplers.base import Callback, register_solver


def _flow_time(tau: int, num_timesteps: int) -> float:
    return 1.0 - (tau + 1) / num_timesteps


def _full(x: torch.Tensor, tau: int) -> torch.Tensor:
    return torch.full((x.shape[0],), tau, dtype=torch.long, device=x.device)


@register_solver("ddim", "discrete", stochastic=lambda opts: opts.get("eta", 0.0) > 0, models=("diffusion",),
                 description="DDIM (Song et al. 2021, eq. 12), eta=0 deterministic")
def ddim(model, x, *, timesteps: list[int], eta: float = 0.0, noise: Callable[[int], torch.Tensor] | None = None,
         callback: Callback | None = None):
    """DDIM, eq. 12 of Song, Meng & Ermon 2021:
        x_prev = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma^2) * eps + sigma * z,
        x0_hat = (x - sqrt(1 - a) * eps) / sqrt(a),
        sigma  = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev).
    """
    T = model.num_timesteps
    alpha_bar = model.alphas_cumprod
    steps = len(timesteps)
    for i, tau in enumerate(timesteps):        # in decreasing order
        a = float(alpha_bar[tau])
        a_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < steps else 1.0
        eps = model.eps(x, _full(x, tau))
        if callback is not None:
            callback(i, _flow_time(tau, T), x, None)
        x0_hat = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise(i)
    if callback is not None:
        callback(steps, 1.0, x, None)
    return x, {"eta": eta}


@register_solver("ddpm", "discrete", stochastic=True, models=("diffusion",),
                 description="DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), sigma^2 = beta")
def ddpm(model, x, *, timesteps: list[int], noise: Callable[[int], torch.Tensor] | None = None,
         callback: Callback | None = None):
    """Algorithm 2 of Ho et al. 2020 with sigma_t^2 = beta_t:
        x_{t-1} = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - a_t) * eps) + sigma_t * z,   z = 0 at the last step.
    With S < T steps the schedule is respaced (Nichol & Dhariwal 2021): beta_i = 1 - a_{tau_i} / a_{tau_{i+1}}, tau
    the next (smaller) timestep.
    """
    T = model.num_timesteps
    alpha_bar = model.alphas_cumprod
    steps = len(timesteps)
    for i, tau in enumerate(timesteps):        # in decreasing order
        a = float(alpha_bar[tau])
        a_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < steps else 1.0
        beta = 1 - a / a_prev
        eps = model.eps(x, _full(x, tau))
        if callback is not None:
            callback(i, _flow_time(tau, T), x, None)
        x = (x - beta / math.sqrt(1 - a) * eps) / math.sqrt(1 - beta)
        if i + 1 < steps:
            x = x + math.sqrt(beta) * noise(i)
    if callback is not None:
        callback(steps, 1.0, x, None)
    return x, {}

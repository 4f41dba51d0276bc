"""Stochastic samplers on any model with a Gaussian path: Euler ancestral and DPM-Solver++(2M) SDE.

Both are written on the path's alpha(t), sigma(t) at the grid's flow times (t=0 source, t=1 data) and the model's
data prediction D = E[X1 | X_t = x] (:func:`rfbench.models.paths.data_prediction`), in rfbench's state x_t; in EDM's
variables x_edm = x_t / alpha_t, sigma_edm = sigma_t / alpha_t (k-diffusion's) they are k-diffusion's
``sample_euler_ancestral`` and ``sample_dpmpp_2m_sde`` (midpoint), which x_t = alpha_t x_edm turns into the steps
below. The noise z_i of step i is ``noise(i)``: per-sample seeded draws (:class:`rfbench.noise.StepNoise`), so a
sample does not depend on the batch it is in. Neither draws noise on a step to sigma = 0 (a flow's t=1).

A rectified flow's source (t=0) has sigma_edm = inf: a first step from there goes straight to the data prediction
plus the step's noise, as the limit of the formulas (k-diffusion's grids never start there; rfbench's default
uniform grid does).

Checked against k-diffusion (crowsonkb/k-diffusion, run outside this repository on the same analytic model and
noise) in tests/test_stochastic_samplers.py.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from rfbench.models.paths import data_prediction
from rfbench.samplers.base import Callback, register_solver
from rfbench.samplers.exponential import _schedule


def _draws(opts: dict) -> bool:
    """Whether the options inject noise: eta > 0 (default 1) and s_noise > 0 (default 1)."""
    return opts.get("eta", 1.0) > 0 and opts.get("s_noise", 1.0) > 0


@register_solver("euler-ancestral", "fixed", order=1, expected_nfe=lambda n: n, stochastic=_draws,
                 description="Euler ancestral (k-diffusion's sample_euler_ancestral), option eta (0: DDIM)")
def euler_ancestral(model, x, *, times, eta: float = 1.0, s_noise: float = 1.0,
                    noise: Callable[[int], torch.Tensor] | None = None, callback: Callback | None = None):
    """Ancestral sampling with Euler steps, k-diffusion's ``sample_euler_ancestral``: from sigma_edm s to s' each
    step goes down to s_down = sqrt(s'^2 - s_up^2) along the ODE, then adds s_up z, with
    s_up = min(s', eta s' sqrt(1 - s'^2 / s^2)). In rfbench's state (alpha', sigma' at the next time):
        x' = (alpha' s_down / sigma) x + alpha' (1 - s_down / s) D + alpha' s_up s_noise z.
    eta = 0 is deterministic (DDIM: s_down = s'); eta = 1 is DDPM's ancestral variance. One evaluation per step."""
    alpha, sigma, _ = _schedule(model, times)
    with np.errstate(divide="ignore"):
        s = sigma / alpha                                  # sigma_edm: inf at a flow's source, 0 at its data
    steps = len(times) - 1
    for i in range(steps):
        if callback is not None:
            callback(i, times[i], x, None)
        denoised = data_prediction(model, x, times[i])
        s_next = float(s[i + 1])
        shrink = 1.0 - (s_next / s[i]) ** 2                # 1 from a flow's source (s = inf)
        s_up = min(s_next, eta * s_next * math.sqrt(shrink)) if eta else 0.0
        s_down = math.sqrt(max(s_next ** 2 - s_up ** 2, 0.0))
        x = float(alpha[i + 1] * s_down / sigma[i]) * x + float(alpha[i + 1] * (1.0 - s_down / s[i])) * denoised
        if s_next > 0 and s_up > 0 and s_noise > 0:
            x = x + float(alpha[i + 1] * s_up * s_noise) * noise(i)
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {"eta": eta}


@register_solver("dpm++2m-sde", "fixed", order=2, expected_nfe=lambda n: n, stochastic=_draws,
                 description="DPM-Solver++(2M) SDE, midpoint (k-diffusion's sample_dpmpp_2m_sde); eta, s_noise")
def dpm_2m_sde(model, x, *, times, eta: float = 1.0, s_noise: float = 1.0,
               noise: Callable[[int], torch.Tensor] | None = None, callback: Callback | None = None):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", its SDE variant), k-diffusion's ``sample_dpmpp_2m_sde``
    with solver_type="midpoint": with h = lambda' - lambda (lambda = log(alpha / sigma)) and D, D_prev the data
    predictions at this step and the one before,
        x' = (sigma' / sigma) e^{-eta h} x + alpha' (1 - e^{-(1 + eta) h}) (D + (D - D_prev) / (2 r))
             + sigma' sqrt(1 - e^{-2 eta h}) s_noise z,        r = h_prev / h,
    the D_prev term left out on the first step; a step to sigma = 0 returns D. eta = 0 is DPM-Solver++(2M) (rfbench's
    dpm++2m with lower_order_final=False). One evaluation per step."""
    alpha, sigma, lam = _schedule(model, times)
    steps = len(times) - 1
    previous, h_prev = None, None
    for i in range(steps):
        if callback is not None:
            callback(i, times[i], x, None)
        denoised = data_prediction(model, x, times[i])
        h = lam[i + 1] - lam[i]                            # inf from a flow's source and to its data
        if sigma[i + 1] == 0:                              # to the data: the denoised x
            x = float(alpha[i + 1]) * denoised
        else:
            eta_h = eta * h if eta else 0.0                # 0 * inf would be nan
            decay = -math.expm1(-h - eta_h)                # 1 - e^{-(1 + eta) h}
            x = float(sigma[i + 1] / sigma[i] * math.exp(-eta_h)) * x + float(alpha[i + 1] * decay) * denoised
            if previous is not None:                       # 1 / r = h / h_prev: 0 after a step from the source
                x = x + float(alpha[i + 1] * 0.5 * decay * (h / h_prev)) * (denoised - previous)
            if eta_h > 0 and s_noise > 0:
                x = x + float(sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * eta_h)) * s_noise) * noise(i)
        previous, h_prev = denoised, h
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {"eta": eta}

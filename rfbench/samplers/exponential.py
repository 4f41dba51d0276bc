"""The fast solvers of the field on any model with a Gaussian path: DPM-Solver++ multistep, UniPC and EDM's Heun.

Each works on rectified flows, on score-SDE's VP / sub-VP models and on DDPM-style DiffusionModels alike, through
the one abstraction exponential integrators need (:mod:`rfbench.models.paths`): the path's alpha(t), sigma(t) and
half log-SNR lambda = log(alpha / sigma) at the grid's flow times, and the model's data prediction
x0 = E[X1 | X_t = x] (:func:`rfbench.models.paths.data_prediction`: the model's own ``denoise``, or a flow's
velocity turned into one). DDIM is their first-order case: one DPM-Solver++ step from t to t' is
x' = (sigma' / sigma) x + alpha' (1 - e^{-h}) x0 with h = lambda' - lambda; on a rectified flow it is Euler's step.

A rectified flow's lambda is -inf at t=0 and +inf at t=1: the first step from the source is that first-order step
(its h is infinite, so the higher-order corrections it would need vanish); later steps leave that infinitely distant
first value out of their multistep history (UniPC drops it from its order conditions, in the limit the full system
has), and a step to the data (t=1, sigma=0) is taken first-order as diffusers does with ``final_sigmas_type="zero"``.

Checked in tests/test_fast_solvers.py against the official code (LuChengTHU/dpm-solver, wl-zhao/UniPC,
NVlabs/edm, run outside this repository on the same models) and against diffusers' schedulers.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from rfbench.models.paths import data_prediction, path_of
from rfbench.samplers.base import Callback, register_solver

LOWER_ORDER_FINAL_BELOW = 10   # DPM-Solver's official rule: the last steps take a lower order when steps < 10


def _lower_below(lower_order_final: bool | int) -> int:
    """``lower_order_final``: True (the official DPM-Solver's rule, below 10 steps), False (never), or the number of
    steps below which the final steps take a lower order (15 is diffusers' rule)."""
    if isinstance(lower_order_final, bool):
        return LOWER_ORDER_FINAL_BELOW if lower_order_final else 0
    if isinstance(lower_order_final, int) and lower_order_final >= 0:
        return lower_order_final
    raise ValueError(f"lower_order_final must be True, False or a number of steps >= 0, got {lower_order_final!r}")


def _predictor(model, thresholding: float):
    """The data prediction x0(x, t), with DPM-Solver's dynamic thresholding when ``thresholding`` (its ratio p) is
    > 0: per sample s = max(1, the p-quantile of |x0|), x0 <- clamp(x0, -s, s) / s (Saharia et al. 2022; the official
    DPM-Solver's and zju-pi/diff-sampler's ``dynamic_thresholding_fn`` with p = 0.995 and its floor 1), for data
    scaled to [-1, 1]. 0: none."""
    if isinstance(thresholding, bool) or not isinstance(thresholding, (int, float)) or not 0 <= thresholding <= 1:
        raise ValueError(f"thresholding must be a quantile ratio in (0, 1] (0.995: DPM-Solver's), or 0 for none; got "
                         f"{thresholding!r}")
    if thresholding == 0:
        return lambda x, t: data_prediction(model, x, t)

    def thresholded(x, t):
        x0 = data_prediction(model, x, t)
        s = torch.quantile(x0.abs().reshape(x0.shape[0], -1), float(thresholding), dim=1).clamp(min=1.0)
        s = s.reshape(-1, *[1] * (x0.ndim - 1))
        return torch.clamp(x0, -s, s) / s
    return thresholded


def _schedule(model, times: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alpha, sigma = path_of(model).alpha_sigma(np.asarray(times, dtype=np.float64))
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)
    return alpha, sigma, lam


def _dpm_multistep(model, x, times, order: int, lower_order_final: bool | int, thresholding: float,
                   callback: Callback | None):
    below = _lower_below(lower_order_final)
    predict = _predictor(model, thresholding)
    alpha, sigma, lam = _schedule(model, times)
    steps = len(times) - 1
    x0s = [predict(x, times[0])]
    for i in range(1, steps + 1):
        if callback is not None:
            callback(i - 1, times[i - 1], x, None)
        step_order = min(order, i)                         # the first steps: as many previous values as there are
        if steps < below:
            step_order = min(step_order, steps + 1 - i)
        if not math.isfinite(lam[i]):                      # to the data itself (sigma 0): first order
            step_order = 1
        h = lam[i] - lam[i - 1]
        phi_1 = math.expm1(-h)                             # -1 when h is infinite (from the source of a flow)
        ratio = sigma[i] / sigma[i - 1]
        base = ratio * x - (alpha[i] * phi_1) * x0s[-1]
        if step_order == 1:
            x = base
        elif step_order == 2:                              # DPM-Solver++(2M), Lu et al. 2022b, Algorithm 2
            r0 = (lam[i - 1] - lam[i - 2]) / h
            d1 = (x0s[-1] - x0s[-2]) * (1.0 / r0)
            x = base - (0.5 * alpha[i] * phi_1) * d1
        else:                                              # DPM-Solver++(3M)
            r0, r1 = (lam[i - 1] - lam[i - 2]) / h, (lam[i - 2] - lam[i - 3]) / h
            d1_0, d1_1 = (x0s[-1] - x0s[-2]) * (1.0 / r0), (x0s[-2] - x0s[-3]) * (1.0 / r1)
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1))
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            x = base + (alpha[i] * phi_2) * d1 - (alpha[i] * phi_3) * d2
        if i < steps:                                      # the final value is never evaluated
            x0s = (x0s + [predict(x, times[i])])[-3:]
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {}


@register_solver("dpm++2m", "fixed", order=2, expected_nfe=lambda n: n,
                 description="DPM-Solver++(2M), data prediction, lower order at the final steps")
def dpm_2m(model, x, *, times, lower_order_final: bool | int = True, thresholding: float = 0.0,
           callback: Callback | None = None):
    """DPM-Solver++ multistep of order 2 (Lu et al. 2022, "DPM-Solver++", Algorithm 2), one evaluation per step.
    ``lower_order_final``: True lowers the order of the final steps below 10 steps, as the official code does;
    an int n below n steps (15: diffusers' DPMSolverMultistepScheduler); False never. ``thresholding``: the ratio
    of DPM-Solver's dynamic thresholding of each data prediction (0.995 as diff-sampler's tables; 0: none)."""
    return _dpm_multistep(model, x, times, 2, lower_order_final, thresholding, callback)


@register_solver("dpm++3m", "fixed", order=3, expected_nfe=lambda n: n,
                 description="DPM-Solver++(3M), data prediction, lower order at the final steps")
def dpm_3m(model, x, *, times, lower_order_final: bool | int = True, thresholding: float = 0.0,
           callback: Callback | None = None):
    """DPM-Solver++ multistep of order 3, one evaluation per step; options as dpm++2m's."""
    return _dpm_multistep(model, x, times, 3, lower_order_final, thresholding, callback)


def _unipc_step(x, x0s, lams, lam_t, alpha_t, ratio, order: int, corrector):
    """One UniPC-bh2 step (Zhao et al. 2023, data prediction) from the last of ``x0s`` (at ``lams[-1]``) to lam_t:
    the predictor, and, when ``corrector`` is given (a function of the predicted x returning the data prediction
    there), the corrector UniC. Returns (x_t, the data prediction at x_t or None).

    A previous value at an infinite distance in log-SNR (a flow's source, lambda = -inf) drops out: its r_k is
    infinite, its difference term vanishes and so does its weight, which leaves the order conditions of the finite
    entries alone (the limit of the full system; solving that with an infinite entry gives NaN at order 3)."""
    h = lam_t - lams[-1]
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh)                                   # bh2: B(h) = e^h - 1 (in -h)
    past = [k for k in range(1, order) if math.isfinite(lams[-1 - k])]
    rks = [(lams[-1 - k] - lams[-1]) / h for k in past] + [1.0]
    d1s = [(x0s[-1 - k] - x0s[-1]) * (1.0 / r) for k, r in zip(past, rks)]
    # the order conditions: R rho = b, R_ij = r_j^i, b_i = h phi_{i+1}(h) i! / B(h)
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1.0, 1
    for i in range(1, len(rks) + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    x_base = ratio * x - (alpha_t * h_phi_1) * x0s[-1]
    x_t = x_base
    if d1s:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(np.array(rows)[:-1, :-1], np.array(b[:-1])).tolist()
        x_t = x_base - (alpha_t * b_h) * sum(d * r for d, r in zip(d1s, rhos_p))
    if corrector is None:
        return x_t, None
    x0_t = corrector(x_t)
    rhos_c = [0.5] if order == 1 else np.linalg.solve(np.array(rows), np.array(b)).tolist()
    correction = sum((d * r for d, r in zip(d1s, rhos_c[:-1])), torch.zeros_like(x)) + (x0_t - x0s[-1]) * rhos_c[-1]
    return x_base - (alpha_t * b_h) * correction, x0_t


@register_solver("unipc", "fixed", order=3, expected_nfe=lambda n: n,
                 description="UniPC-bh2 (predictor UniP, corrector UniC), data prediction; option order 1-3")
def unipc(model, x, *, times, order: int = 2, lower_order_final: bool | int = True, thresholding: float = 0.0,
          callback: Callback | None = None):
    """UniPC (Zhao et al. 2023) with B(h) = e^h - 1 ("bh2"), multistep, order ``order``; the corrector reuses the
    evaluation the next step needs, so the cost stays one evaluation per step (none at the last).
    ``lower_order_final``: True lowers the order of the final steps at any number of steps, as the official code
    and diffusers' UniPCMultistepScheduler do; an int n only below n steps (as the DPM solvers take it); False never.
    ``thresholding``: as dpm++2m's (each data prediction, the corrector's included)."""
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
    below = math.inf if lower_order_final is True else _lower_below(lower_order_final)
    predict = _predictor(model, thresholding)
    alpha, sigma, lam = _schedule(model, times)
    steps = len(times) - 1
    x0s, lams = [predict(x, times[0])], [lam[0]]
    for i in range(1, steps + 1):
        if callback is not None:
            callback(i - 1, times[i - 1], x, None)
        step_order = min(order, i)
        if steps < below:
            step_order = min(step_order, steps + 1 - i)
        if not math.isfinite(lam[i]):
            step_order = 1
        corrector = (lambda xt, t=times[i]: predict(xt, t)) if i < steps else None
        x, x0_t = _unipc_step(x, x0s, lams, lam[i], alpha[i], sigma[i] / sigma[i - 1], step_order, corrector)
        if x0_t is not None:
            x0s, lams = (x0s + [x0_t])[-3:], (lams + [lam[i]])[-3:]
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {}


def _reaches_data(model) -> bool:
    """Whether the model's path ends at sigma = 0 (a rectified flow) rather than at a smallest sigma > 0 (VP, sub-VP,
    DDPM schedules)."""
    return float(path_of(model).alpha_sigma(np.array([1.0]))[1][0]) == 0.0


def _edm_nfe(steps: int, model=None) -> int:
    """EDM's Heun: 2N - 1 on a flow (its last step, to sigma = 0, is Euler); 2N + 1 where the path ends at a sigma > 0
    (Heun on every step of the grid, then EDM's Euler step from there to sigma = 0)."""
    return 2 * steps - 1 if model is None or _reaches_data(model) else 2 * steps + 1


def _churned(opts: dict) -> bool:
    """edm-heun is stochastic with s_churn > 0 (Algorithm 2 of Karras et al. 2022)."""
    return opts.get("s_churn", 0.0) > 0


@register_solver("edm-heun", "fixed", order=2, expected_nfe=_edm_nfe, default_grid="karras", stochastic=_churned,
                 description="EDM's Heun (Karras et al. 2022, Algorithm 1; Algorithm 2 with s_churn > 0), Euler on "
                             "the step to sigma=0")
def edm_heun(model, x, *, times, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
             s_noise: float = 1.0, noise: Callable[[int], torch.Tensor] | None = None,
             callback: Callback | None = None):
    """EDM's sampler in its scaled variables x_edm = x / alpha, sigma_edm = sigma / alpha: Heun's method on
    dx_edm / dsigma = (x_edm - D) / sigma, Euler on the step to sigma = 0. As EDM, it starts from sigma_max * x0 in
    those variables: its x is that state, sigma(t_0) x0 in rfbench's (:func:`rfbench.samplers.start_state`).

    On a flow the grid's last step goes to sigma = 0 (t=1): N steps, 2N - 1 evaluations, EDM's sampler with
    num_steps = N on the karras grid. Where the path ends at a smallest sigma > 0 (score-SDE's VP / sub-VP, DDPM
    schedules) every step of the grid is a Heun step and EDM's final Euler step from that sigma to 0 follows, which
    returns the denoised sample, as EDM does: N steps, 2N + 1 evaluations, EDM's sampler with num_steps = N + 1
    (its sigma_min the model's smallest). Both are checked against NVlabs/edm in tests/test_fast_solvers.py.

    s_churn > 0 is EDM's stochastic sampler (Algorithm 2; ``edm_sampler``'s S_churn, S_min, S_max, S_noise): each
    step first raises sigma_edm from s to s_hat = (1 + gamma) s, gamma = min(s_churn / num_steps, sqrt(2) - 1)
    where s_tmin <= s <= s_tmax (else 0; num_steps is EDM's, N or N + 1 as above), adding
    sqrt(s_hat^2 - s^2) s_noise z with z = noise(i) (drawn at every step, as EDM does), then steps from s_hat. The
    model is evaluated at s_hat's flow time on its path. s_churn = 0 is the deterministic sampler."""
    alpha, sigma, _ = _schedule(model, times)
    if alpha[0] <= 0:
        raise ValueError("edm-heun starts at a finite sigma = sigma_t / alpha_t; the grid's first time has alpha = 0 "
                         "(a flow's source): use the karras grid (its default) or one that starts later")
    with np.errstate(divide="ignore"):
        s = sigma / alpha                                  # EDM's sigma; 0 at a flow's data end
    steps = len(times) - 1
    churn = _Churn(model, s_churn, s_tmin, s_tmax, s_noise, noise, steps + (s[-1] > 0))
    x_edm = x / float(alpha[0])                            # EDM's latents * sigma_max
    for i in range(steps):
        if callback is not None:
            callback(i, times[i], x_edm * float(alpha[i]), None)
        x_hat, s_hat, t_hat, a_hat = churn(i, x_edm, s[i], times[i], alpha[i])
        denoised = data_prediction(model, x_hat * float(a_hat), t_hat)
        d_cur = (x_hat - denoised) * (1.0 / s_hat)
        x_next = x_hat + (s[i + 1] - s_hat) * d_cur
        if s[i + 1] > 0:                                   # the 2nd-order correction, but on a step to sigma = 0
            denoised = data_prediction(model, x_next * float(alpha[i + 1]), times[i + 1])
            d_prime = (x_next - denoised) * (1.0 / s[i + 1])
            x_next = x_hat + (s[i + 1] - s_hat) * (0.5 * d_cur + 0.5 * d_prime)
        x_edm = x_next
    if s[-1] > 0:                                          # EDM's last step, Euler to sigma = 0: the denoised x
        x_hat, s_hat, t_hat, a_hat = churn(steps, x_edm, s[-1], times[-1], alpha[-1])
        d_cur = (x_hat - data_prediction(model, x_hat * float(a_hat), t_hat)) * (1.0 / s_hat)
        x = x_hat + (0.0 - s_hat) * d_cur
    else:
        x = x_edm * float(alpha[-1])
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {}


class _Churn:
    """EDM's noise increase before step i (Algorithm 2, lines 4-6): (x_hat, s_hat, its flow time, its alpha); with
    gamma = 0 the step's own (x_edm, s, t, alpha), unchanged."""

    def __init__(self, model, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, noise, num_steps: int):
        self.path = path_of(model)
        self.gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
        self.s_tmin, self.s_tmax, self.s_noise, self.noise = s_tmin, s_tmax, s_noise, noise
        lam_lo = float(self.path.log_snr(np.array([0.0]))[0])
        self.s_largest = math.exp(-lam_lo)                 # the model's largest sigma_edm (inf on a flow)

    def __call__(self, i: int, x_edm, s: float, t: float, alpha: float):
        if self.gamma == 0:
            return x_edm, s, t, alpha
        z = self.noise(i)                                  # drawn at every step, as EDM's edm_sampler does
        gamma = self.gamma if self.s_tmin <= s <= self.s_tmax else 0.0
        if gamma == 0:
            return x_edm, s, t, alpha
        s_hat = s + gamma * s
        if s_hat > self.s_largest:
            raise ValueError(f"edm-heun: s_churn raises sigma to {s_hat:.6g}, above the model's largest "
                             f"{self.s_largest:.6g}; lower s_churn or s_tmax")
        t_hat = float(self.path.t_of_log_snr(np.array([-math.log(s_hat)]))[0])
        a_hat = float(self.path.alpha_sigma(np.array([t_hat]))[0][0])
        return x_edm + (math.sqrt(s_hat ** 2 - s ** 2) * self.s_noise) * z, s_hat, t_hat, a_hat

"""Linear multistep solvers of EDM's ODE in sigma: iPNDM and DEIS-tAB, one model evaluation per step.

Both integrate the probability-flow ODE in EDM's variables (Karras et al. 2022, eq. 4 with s(t) = 1, sigma(t) = t),

    dx / dsigma = d(x, sigma) = (x - D(x, sigma)) / sigma,

with x = x_t / alpha_t and sigma = sigma_t / alpha_t on the model's Gaussian path (:mod:`rfbench.models.paths`;
a rectified flow: sigma = (1 - t) / t, x = x_t / t) and D(x, sigma) the model's data prediction at the grid's flow
time. Each step evaluates d once at the current point and combines it with the slopes of up to three earlier
steps, x_{i+1} = x_i + sum_j c_ij d_{i-j}; the first steps use as many earlier slopes as there are. As EDM's
sampler, both start from sigma(t_0) x0 in those variables (the state sigma_t(t_0) x0 in rfbench's) and return the
state at the grid's last time, without an extra evaluation: on a flow the karras grid's last step goes to sigma = 0
(the data), on VP / sub-VP / DDPM models it ends at their smallest sigma, as zju-pi/diff-sampler's samplers do with
``denoise_to_zero=False``. A grid that starts at a flow's source (sigma infinite) is refused; their default grid
is karras.

* iPNDM (improved PNDM; Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator";
  zju-pi/diff-sampler's ``ipndm_sampler``): the fixed-step Adams-Bashforth weights of order 1-4 on whatever grid,
  c_ij = (sigma_{i+1} - sigma_i) b_j.
* DEIS-tAB (the same paper's multistep DEIS in time): the slopes extrapolated by the Lagrange polynomial through
  the current and r earlier points in the VP time tau, integrated exactly over the step in sigma,
  c_ij = int L_j(tau) dsigma. The VP time is diff-sampler's (``edm2t``): sigma(tau)^2 = exp(beta_d tau^2 / 2 +
  beta_min tau) - 1 through sigma(1e-3) = 0.002 and sigma(1) = 80, EDM's range, for every model.

Checked against zju-pi/diff-sampler's ``ipndm_sampler`` and ``deis_sampler`` in tests/test_ipndm_deis.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rfbench.models.paths import data_prediction, path_of
from rfbench.samplers.base import Callback, register_solver

# Adams-Bashforth weights of the current slope and the earlier ones (newest first), by order
ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                   4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}

# diff-sampler's VP time for DEIS (solver_utils.edm2t): the VP-SDE whose sigma = sqrt(e^{int beta} - 1) runs from
# EDM's sigma_min = 0.002 at tau = 1e-3 to its sigma_max = 80 at tau = 1
_VP_EPS, _VP_SIGMA_MIN, _VP_SIGMA_MAX = 1e-3, 0.002, 80.0
VP_BETA_D = 2 * (math.log1p(_VP_SIGMA_MIN ** 2) / _VP_EPS - math.log1p(_VP_SIGMA_MAX ** 2)) / (_VP_EPS - 1)
VP_BETA_MIN = math.log1p(_VP_SIGMA_MAX ** 2) - 0.5 * VP_BETA_D
# tau(sigma) is analytic but for branch points at sigma = +-i and, near 0, at sigma = +-i |beta_min| / sqrt(2 beta_d)
# (7e-4): Gauss-Legendre on panels [x, 4x] from there up (and one below) reaches float64 round-off on any step
_BRANCH = abs(VP_BETA_MIN) / math.sqrt(2 * VP_BETA_D)
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(32)


def vp_time(sigma: np.ndarray) -> np.ndarray:
    """DEIS's VP time tau of EDM's sigma (diff-sampler's ``edm2t``), float64; smooth in sigma down to sigma = 0."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return (np.sqrt(VP_BETA_MIN ** 2 + 2 * VP_BETA_D * np.log1p(sigma ** 2)) - VP_BETA_MIN) / VP_BETA_D


def deis_coefficients(sigmas: np.ndarray, i: int, points: int) -> list[float]:
    """The DEIS-tAB weights of step i (sigmas[i] -> sigmas[i+1]) for the slopes at sigmas[i], sigmas[i-1], ...
    (``points`` of them): int_{sigma_i}^{sigma_{i+1}} L_j(tau(sigma)) dsigma, L_j the Lagrange basis polynomial
    in the VP time through those points. Computed in sigma, where the integrand is analytic (in tau the integrand
    dsigma/dtau is singular at sigma = 0), by Gauss-Legendre quadrature on panels: float64 round-off."""
    lo, hi = float(sigmas[i]), float(sigmas[i + 1])
    if points == 1:
        return [hi - lo]
    taus = vp_time(np.asarray([sigmas[i - k] for k in range(points)]))
    sigma, weight = _quadrature(lo, hi)
    tau = vp_time(sigma)
    weights = []
    for j in range(points):
        basis = np.ones_like(tau)
        for k in range(points):
            if k != j:
                basis *= (tau - taus[k]) / (taus[j] - taus[k])
        weights.append(float(np.dot(weight, basis)))
    return weights


def _quadrature(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of int_lo^hi f(sigma) dsigma (either order): Gauss-Legendre on panels cut at _BRANCH 4^k."""
    a, b = min(lo, hi), max(lo, hi)
    cuts, edge = [a], _BRANCH
    while edge < b:
        if edge > a:
            cuts.append(edge)
        edge *= 4
    cuts.append(b)
    half = 0.5 * np.diff(cuts)[:, None]
    nodes = (np.asarray(cuts[:-1])[:, None] + half * (_NODES + 1.0)).ravel()
    weights = (half * _WEIGHTS).ravel() * (1.0 if hi >= lo else -1.0)
    return nodes, weights


def _edm_variables(model, times: list[float], solver: str) -> tuple[np.ndarray, np.ndarray]:
    """alpha_t and EDM's sigma = sigma_t / alpha_t at the grid's times (alpha grows with t); refuses a grid that
    starts at alpha = 0."""
    alpha, sigma = path_of(model).alpha_sigma(np.asarray(times, dtype=np.float64))
    if alpha[0] <= 0:
        raise ValueError(f"{solver} starts at a finite sigma = sigma_t / alpha_t; the grid's first time t={times[0]:g} "
                         f"has alpha = 0 (a flow's source): use the karras grid (its default) or one that starts "
                         f"later")
    return alpha, sigma / alpha


def _multistep(model, x, times, solver: str, max_points: int, weights, callback: Callback | None):
    """x_{i+1} = x_i + sum_j weights(sigmas, i, points)[j] d_{i-j} in EDM's variables, points = min(i + 1,
    max_points); one evaluation per step."""
    alpha, sigmas = _edm_variables(model, times, solver)
    steps = len(times) - 1
    x_edm = x / float(alpha[0])                            # EDM's latents * sigma_max
    slopes: list[torch.Tensor] = []                        # d at the current and earlier steps, newest first
    for i in range(steps):
        if callback is not None:
            callback(i, times[i], x_edm * float(alpha[i]), None)
        denoised = data_prediction(model, x_edm * float(alpha[i]), times[i])
        slopes = [(x_edm - denoised) * (1.0 / float(sigmas[i]))] + slopes[:max_points - 1]
        x_edm = x_edm + sum(c * d for c, d in zip(weights(sigmas, i, len(slopes)), slopes))
    x = x_edm * float(alpha[-1])
    if callback is not None:
        callback(steps, times[-1], x, None)
    return x, {}


@register_solver("ipndm", "fixed", order=4, expected_nfe=lambda n: n, default_grid="karras",
                 description="improved PNDM (Zhang & Chen 2023): Adams-Bashforth on EDM's ODE in sigma; option "
                             "max_order 1-4")
def ipndm(model, x, *, times, max_order: int = 4, callback: Callback | None = None):
    """iPNDM: the Adams-Bashforth step of order min(i + 1, ``max_order``) at step i, with the fixed-step weights
    [1], [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24 whatever the grid's spacing, on dx/dsigma =
    (x - D) / sigma (zju-pi/diff-sampler's ``ipndm_sampler``). One evaluation per step."""
    if isinstance(max_order, bool) or max_order not in ADAMS_BASHFORTH:
        raise ValueError(f"ipndm: max_order must be 1, 2, 3 or 4, got {max_order!r}")

    def weights(sigmas, i, points):
        return [float(sigmas[i + 1] - sigmas[i]) * b for b in ADAMS_BASHFORTH[points]]
    return _multistep(model, x, times, "ipndm", max_order, weights, callback)


@register_solver("deis", "fixed", order=4, expected_nfe=lambda n: n, default_grid="time_uniform:rho=2",
                 description="DEIS-tAB (Zhang & Chen 2023): Lagrange extrapolation in VP time on EDM's ODE; option "
                             "order 1-3")
def deis(model, x, *, times, order: int = 3, callback: Callback | None = None):
    """DEIS-tAB of order ``order`` (tAB1-tAB3: the Lagrange polynomial of degree ``order`` through the current
    slope and ``order`` earlier ones, fewer on the first steps; diff-sampler's ``deis_sampler`` with
    ``deis_mode="tab"`` and max_order = order + 1, its DEIS-tAB3 being max_order 4). The weights are the exact
    integrals of the Lagrange basis over each step (:func:`deis_coefficients`). One evaluation per step."""
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"deis: order must be 1, 2 or 3, got {order!r}")
    return _multistep(model, x, times, "deis", order + 1, deis_coefficients, callback)

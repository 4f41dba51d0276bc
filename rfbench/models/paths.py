"""The Gaussian path of a model, in rfbench's flow time: what time grids (and exponential integrators) need.

Every model rfbench samples moves noise (t=0) to data (t=1) along a path ``X_t = alpha(t) X1 + sigma(t) eps``:

* a rectified flow: alpha = t, sigma = 1 - t (:class:`RectifiedPath`; a flow trained on a window [t_min, 1], as the
  published rectified-flow checkpoints are, runs t_min + s (1 - t_min) at flow time s);
* score-SDE's continuous VP / sub-VP models (:class:`~rfbench.models.score_sde.VPSDEFlow`): their own marginals,
  in SDE time ``t_sde = 1 - s (1 - eps)`` (:class:`VPPath`);
* a DDPM-style :class:`~rfbench.models.DiffusionModel`: alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) at
  timestep ``tau = (1 - t)(T - 1)`` (:class:`DiscretePath`).

A path gives the half log-SNR ``lambda(t) = log(alpha / sigma)`` (increasing in t), its inverse, and the model's
own "diffusion time" (decreasing in t: 1 - t for flows, the SDE time for VP models), in which DPM-Solver defines its
uniform and quadratic grids. A rectified flow's log-SNR is -inf at t=0 and +inf at t=1: grids that need a finite
one are computed on [delta, 1 - delta] (delta = :data:`FLOW_DELTA`) and then run from 0 to 1 (see
:mod:`rfbench.samplers.grids`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

FLOW_DELTA = 1e-3   # a rectified flow's log-SNR grids are computed on [delta, 1 - delta]


class GaussianPath:
    """alpha(t), sigma(t) of a model in flow time t in [0, 1] (subclasses give :meth:`alpha_sigma`), its half
    log-SNR and the time maps."""

    def alpha_sigma(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha_t, sigma_t) at flow times t (float64)."""
        raise NotImplementedError

    def log_snr(self, t: np.ndarray) -> np.ndarray:
        """lambda(t) = log(alpha_t / sigma_t), increasing in t (float64; -inf where alpha = 0, +inf where
        sigma = 0)."""
        alpha, sigma = self.alpha_sigma(t)
        with np.errstate(divide="ignore"):
            return np.log(alpha) - np.log(sigma)

    def data_from_velocity(self, x, v, t: float):
        """E[X1 | X_t = x] from the model's velocity at flow time t (for models without their own ``denoise``)."""
        raise NotImplementedError(f"{type(self).__name__} has no velocity-to-data map; the model must give denoise")

    def finite_range(self) -> tuple[float, float]:
        """The flow-time interval on which lambda is finite and grids that need it are computed."""
        return 0.0, 1.0

    def t_of_log_snr(self, lam: np.ndarray) -> np.ndarray:
        """The flow time of each half log-SNR (bisection on the monotone lambda; subclasses may be exact)."""
        lo, hi = self.finite_range()
        return _invert(self.log_snr, np.asarray(lam, dtype=np.float64), lo, hi)

    def diffusion_time(self, t: np.ndarray) -> np.ndarray:
        """The model's own diffusion time at flow time t (decreasing in t): 1 - t unless the model has its own."""
        return 1.0 - np.asarray(t, dtype=np.float64)

    def flow_time(self, u: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`diffusion_time`."""
        return 1.0 - np.asarray(u, dtype=np.float64)


class RectifiedPath(GaussianPath):
    """X_t = t X1 + (1 - t) X0 on the network's time t_net = t_min + s (1 - t_min) at flow time s."""

    def __init__(self, t_min: float = 0.0, delta: float = FLOW_DELTA):
        self.t_min, self.delta = float(t_min), float(delta)

    def _net(self, s: np.ndarray) -> np.ndarray:
        return self.t_min + np.asarray(s, dtype=np.float64) * (1 - self.t_min)

    def alpha_sigma(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        net = self._net(t)
        return net, 1.0 - net

    def log_snr(self, t: np.ndarray) -> np.ndarray:
        net = self._net(t)
        with np.errstate(divide="ignore"):
            return np.log(net) - np.log1p(-net)

    def data_from_velocity(self, x, v, t: float):
        """x = t X1 + (1 - t) X0 and v = X1 - X0 (on the network's time), so X1 = x + (1 - t) v."""
        return x + float(1.0 - self._net(t)) * v

    def finite_range(self) -> tuple[float, float]:
        lo = 0.0 if self.t_min > 0 else self.delta
        return lo, 1.0 - self.delta

    def t_of_log_snr(self, lam: np.ndarray) -> np.ndarray:
        net = 1.0 / (1.0 + np.exp(-np.asarray(lam, dtype=np.float64)))      # the sigmoid: exact
        return (net - self.t_min) / (1 - self.t_min)

    def diffusion_time(self, t: np.ndarray) -> np.ndarray:
        return 1.0 - self._net(t)

    def flow_time(self, u: np.ndarray) -> np.ndarray:
        return ((1.0 - np.asarray(u, dtype=np.float64)) - self.t_min) / (1 - self.t_min)


class VPPath(GaussianPath):
    """score-SDE's linear VP (or sub-VP) SDE, beta(t) = beta_min + t (beta_max - beta_min), sampled from SDE time 1
    to eps; flow time s is SDE time 1 - s (1 - eps). Its diffusion time is the SDE time, as in DPM-Solver."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3, sub_vp: bool = False):
        self.beta_min, self.beta_max, self.eps, self.sub_vp = beta_min, beta_max, eps, sub_vp

    def _log_mean(self, t_sde: np.ndarray) -> np.ndarray:
        return -0.25 * t_sde ** 2 * (self.beta_max - self.beta_min) - 0.5 * t_sde * self.beta_min

    def alpha_sigma(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self._log_mean(self.diffusion_time(t))
        return np.exp(m), (-np.expm1(2 * m) if self.sub_vp else np.sqrt(-np.expm1(2 * m)))

    def log_snr(self, t: np.ndarray) -> np.ndarray:
        m = self._log_mean(self.diffusion_time(t))
        if self.sub_vp:            # std = 1 - e^{2m}
            return m - np.log(-np.expm1(2 * m))
        return m - 0.5 * np.log(-np.expm1(2 * m))

    def t_of_log_snr(self, lam: np.ndarray) -> np.ndarray:
        lam = np.asarray(lam, dtype=np.float64)
        if self.sub_vp:
            return super().t_of_log_snr(lam)
        # DPM-Solver's closed form for the linear VP schedule (NoiseScheduleVP.inverse_lambda)
        db = self.beta_max - self.beta_min
        tmp = 2.0 * db * np.logaddexp(-2.0 * lam, 0.0)
        t_sde = tmp / (np.sqrt(self.beta_min ** 2 + tmp) + self.beta_min) / db
        return self.flow_time(t_sde)

    def diffusion_time(self, t: np.ndarray) -> np.ndarray:
        return 1.0 - np.asarray(t, dtype=np.float64) * (1 - self.eps)

    def flow_time(self, u: np.ndarray) -> np.ndarray:
        return (1.0 - np.asarray(u, dtype=np.float64)) / (1 - self.eps)


class DiscretePath(GaussianPath):
    """A DiffusionModel's probability-flow ODE: alpha_bar at the continuous timestep tau = (1 - t)(T - 1), through
    the model's own interpolation of log alpha_bar."""

    def __init__(self, log_alpha_bar: Callable[[np.ndarray], np.ndarray], num_timesteps: int):
        self.log_alpha_bar, self.num_timesteps = log_alpha_bar, num_timesteps

    def _log_ab(self, t: np.ndarray) -> np.ndarray:
        return self.log_alpha_bar((1.0 - np.asarray(t, dtype=np.float64)) * (self.num_timesteps - 1))

    def alpha_sigma(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_ab = self._log_ab(t)
        return np.exp(0.5 * log_ab), np.sqrt(-np.expm1(log_ab))

    def log_snr(self, t: np.ndarray) -> np.ndarray:
        log_ab = self._log_ab(t)
        return 0.5 * (log_ab - np.log(-np.expm1(log_ab)))


def _invert(fn: Callable[[np.ndarray], np.ndarray], target: np.ndarray, lo: float, hi: float,
            iterations: int = 200) -> np.ndarray:
    """t in [lo, hi] with fn(t) = target for an increasing fn (vectorised bisection to float64 resolution)."""
    a = np.full(target.shape, lo, dtype=np.float64)
    b = np.full(target.shape, hi, dtype=np.float64)
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        below = fn(mid) < target
        a, b = np.where(below, mid, a), np.where(below, b, mid)
        if np.all(b - a <= 4 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(b))):
            break
    return 0.5 * (a + b)


def path_of(model: Any) -> GaussianPath:
    """The model's Gaussian path: its own ``gaussian_path`` when it has one (VPSDEFlow, TimeWindowFlow,
    DiffusionModel), else a rectified flow's on [0, 1]."""
    path = getattr(model, "gaussian_path", None)
    if path is None:
        return RectifiedPath()
    if not isinstance(path, GaussianPath):
        raise TypeError(f"{type(model).__name__}.gaussian_path must be an rfbench.models.paths.GaussianPath, got "
                        f"{type(path).__name__}")
    return path


def data_prediction(model: Any, x, t: float):
    """The model's data prediction E[X1 | X_t = x] at flow time t: its own ``denoise(x, t)`` when it has one (a
    DiffusionModel, score-SDE's VP flows), else from its velocity on its Gaussian path (a rectified flow:
    X1 = x + (1 - t) v). One model evaluation either way."""
    import torch
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    denoise = getattr(model, "denoise", None)
    if callable(denoise):
        return denoise(x, tt)
    return path_of(model).data_from_velocity(x, model(x, tt), t)


def log_snr_range(path: GaussianPath) -> tuple[float, float]:
    lo, hi = path.finite_range()
    values = path.log_snr(np.array([lo, hi]))
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the model's log-SNR is not finite on its range [{lo:g}, {hi:g}]")
    return float(values[0]), float(values[1])

"""DDPM-style models behind the flow interface.

``DiffusionModel(net, betas, prediction)`` wraps a network trained on a discrete schedule of T steps (DDPM, Ho et
al. 2020) and offers the two things samplers need:

* ``model.eps(x, timesteps)``: the noise prediction at (possibly fractional) timesteps in [0, T), whatever the
  network predicts (``eps``, ``x0`` or ``v``); used by the discrete samplers ``ddim`` and ``ddpm``.
* ``model(x, t)``: the velocity of the probability-flow ODE in rfbench's time convention (t=0 noise, t=1 data), so
  every ODE solver accepts a DiffusionModel as it accepts a flow.

Time map. Flow time t in [0, 1] maps linearly to the continuous timestep ``tau = (1 - t) * (T - 1)``: t=0 is the
noisiest step T-1 and t=1 is step 0. Between integer steps ``log alpha_bar`` is a cubic spline through the discrete
values (exact at every integer, twice continuously differentiable): a piecewise-linear interpolation would put a
kink in the velocity at every one of the T steps, which costs adaptive solvers accuracy and NFE (measured on an
exact Gaussian problem: rk4 with 2,000 steps erred by 2e-4 with kinks). The ODE therefore ends at alpha_bar[0]
(noise std sqrt(beta_0) = 0.01 for DDPM's schedule), as score_sde's ODE sampler does with eps=1e-3; ``ddim`` takes
its last step to alpha_bar = 1.

Probability-flow ODE (Song et al. 2021, VP SDE), written with a = alpha_bar(tau):
    dx/dtau = 1/2 * dlog(a)/dtau * (x - eps(x, tau) / sqrt(1 - a)),   dtau/dt = -(T - 1).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.interpolate
import torch

from rfbench.models.paths import DiscretePath

PREDICTIONS = ("eps", "x0", "v")


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020): betas from ``beta_start`` to ``beta_end`` over T steps, float64."""
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_n = prod_{k<=n} (1 - beta_k), computed as exp(cumsum(log1p(-beta))) in float64."""
    return torch.exp(torch.cumsum(torch.log1p(-torch.as_tensor(betas, dtype=torch.float64)), 0))


class DiffusionModel:
    """Adapter from a discrete-time diffusion network to what rfbench's samplers need.

    Args:
        net: ``net(x, timesteps) -> tensor like x``; ``x`` is (B, ...), ``timesteps`` is (B,) in [0, T). Discrete
            samplers pass integer timesteps (``torch.long``); the probability-flow ODE passes fractional ones
            (float), as score_sde and diffusers networks accept.
        betas: the discrete schedule, shape (T,), each in (0, 1). Default: DDPM's linear 1e-4..0.02, T=1000.
        prediction: what ``net`` predicts: ``"eps"`` (noise), ``"x0"`` (clean data) or ``"v"`` (Salimans & Ho 2022).
    """

    def __init__(self, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 betas: torch.Tensor | None = None, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
        betas = linear_betas() if betas is None else torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D schedule of at least 2 steps, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"betas must lie in (0, 1); got min {betas.min().item():g}, max {betas.max().item():g}")
        self.net = net
        self.prediction = prediction
        self.betas = betas.cpu()
        self.num_timesteps = int(betas.numel())
        self.log_alpha_bar = torch.cumsum(torch.log1p(-self.betas), 0)  # float64, (T,)
        self.alphas_cumprod = torch.exp(self.log_alpha_bar)
        spline = scipy.interpolate.CubicSpline(np.arange(self.num_timesteps), self.log_alpha_bar.numpy())
        self._spline = torch.from_numpy(spline.c.T.copy())  # (T-1, 4): cubic coefficients per segment
        self.input_shape = getattr(net, "input_shape", None)

    def __repr__(self) -> str:
        return f"DiffusionModel(net={type(self.net).__name__}, T={self.num_timesteps}, prediction={self.prediction!r})"

    def to(self, device: str | torch.device) -> "DiffusionModel":
        if hasattr(self.net, "to"):
            self.net.to(device)
        return self

    def eval(self) -> "DiffusionModel":
        if hasattr(self.net, "eval"):
            self.net.eval()
        return self

    # -- the schedule, continuous in the timestep --------------------------------------------------------------
    def _log_alpha_bar(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log alpha_bar at continuous timesteps tau in [0, T-1], and its derivative in tau (float64)."""
        tau = tau.to(torch.float64).clamp(0, self.num_timesteps - 1)
        i = tau.floor().long().clamp(max=self.num_timesteps - 2)
        c = self._spline.to(tau.device)[i]
        d = tau - i
        value = ((c[..., 0] * d + c[..., 1]) * d + c[..., 2]) * d + c[..., 3]
        slope = (3 * c[..., 0] * d + 2 * c[..., 1]) * d + c[..., 2]
        return value, slope

    @property
    def gaussian_path(self) -> DiscretePath:
        """alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) at tau = (1 - t)(T - 1), the ODE's own spline."""
        return DiscretePath(lambda tau: self._log_alpha_bar(torch.from_numpy(tau))[0].numpy(), self.num_timesteps)

    def alpha_bar(self, timesteps: torch.Tensor) -> torch.Tensor:
        """alpha_bar at (possibly fractional) timesteps, float64."""
        return torch.exp(self._log_alpha_bar(torch.as_tensor(timesteps))[0])

    # -- what samplers call --------------------------------------------------------------------------------------
    def eps(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Noise prediction at timesteps (B,) in [0, T), converted from the network's own prediction."""
        out = self.net(x, timesteps)
        return out if self.prediction == "eps" else self._eps_from(out, x, timesteps)

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The data prediction (x - sqrt(1 - a) eps) / sqrt(a) at flow time t (B,), a = alpha_bar at the
        continuous timestep (1 - t)(T - 1): what exponential integrators step with. An x0- or v-predicting network's
        own output is turned into it directly (not through eps, which loses precision where a is small)."""
        tau = (1 - t.to(torch.float64)) * (self.num_timesteps - 1)
        a = _expand(self.alpha_bar(tau), x)
        out = self._at_float_timesteps(x, tau)
        if self.prediction == "x0":
            return out
        if self.prediction == "v":                       # x0 = sqrt(a) x - sqrt(1 - a) v
            return (a.sqrt() * x - (1 - a).sqrt() * out).to(x.dtype)
        return ((x - (1 - a).sqrt() * out) / a.sqrt()).to(x.dtype)

    def _at_float_timesteps(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """The network's own prediction at fractional timesteps tau, or a clear error when it takes only integers."""
        try:
            return self.net(x, tau.to(x.dtype))
        except (RuntimeError, IndexError, TypeError) as exc:
            raise TypeError(f"the probability-flow ODE of this DiffusionModel (and the solvers stepping on its data "
                            f"prediction: dpm++, unipc, edm-heun) calls net(x, timesteps) with fractional float "
                            f"timesteps in [0, {self.num_timesteps - 1}], and the network failed on them "
                            f"({type(exc).__name__}: {exc}). ODE solvers need a network that accepts float "
                            f"timesteps (score_sde and diffusers networks do); ddim and ddpm use integer "
                            f"ones.") from exc

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability-flow ODE velocity at flow time t (B,) in [0, 1] (t=0 noise, t=1 data)."""
        span = self.num_timesteps - 1
        tau = (1 - t.to(torch.float64)) * span
        log_a, dlog_a = self._log_alpha_bar(tau)
        out = self._at_float_timesteps(x, tau)
        eps = out if self.prediction == "eps" else self._eps_from(out, x, tau.to(x.dtype))
        a = _expand(torch.exp(log_a), x)
        dx_dtau = 0.5 * _expand(dlog_a, x) * (x - eps / (1 - a).sqrt())
        return (-span * dx_dtau).to(x.dtype)

    def _eps_from(self, out: torch.Tensor, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = _expand(self.alpha_bar(timesteps), x)
        if self.prediction == "x0":
            return ((x - a.sqrt() * out) / (1 - a).sqrt()).to(x.dtype)
        return (a.sqrt() * out + (1 - a).sqrt() * x).to(x.dtype)  # v = sqrt(a) eps - sqrt(1-a) x0


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-row (B,) tensor to broadcast against ``like`` (B, ...), on its device."""
    return v.to(like.device).reshape(-1, *([1] * (like.ndim - 1)))

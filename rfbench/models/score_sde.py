"""Continuous-time networks of the published CIFAR-10 checkpoints behind rfbench's flow interface
(``model(x, t)``, t in [0, 1], t=0 noise, t=1 data).

* :class:`TimeWindowFlow`: a rectified flow trained on t in [t_min, 1] (gnobitab/RectifiedFlow uses t_min = 1e-3 and
  feeds the network t * 999). Flow time s in [0, 1] evaluates the network at ``t_min + s (1 - t_min)`` with unit
  speed, so an Euler step of size 1/N is exactly the official Euler sampler (``dt = 1/N``, times
  ``i/N (1 - t_min) + t_min``); a one-step model is z0 + v(z0, t_min). The official RK45 sampler integrates the
  same field over (t_min, 1) at unit speed, i.e. 0.1 % less time than here: rk45 rows are not the official ODE to
  the last digit (Euler and one-step rows are); see docs/suites.md (cifar).
* :class:`VPSDEFlow`: the probability-flow ODE of score-SDE's continuous VP or sub-VP SDE (Song et al. 2021,
  ``sde_lib.VPSDE`` / ``subVPSDE``, beta from 0.1 to 20), whose network predicts -score * std from labels
  ``t_sde * 999``. SDE time runs from 1 (noise) to eps = 1e-3, as score_sde's ODE sampler: flow time s maps to
  ``t_sde = 1 - s (1 - eps)``. score_sde's ODE sampler then takes one more reverse-diffusion step at eps
  (``noise_removal``, on in its CIFAR configs, not counted in its NFE); that step is not taken here.
"""

from __future__ import annotations

from typing import Callable

import torch

from rfbench.models.paths import RectifiedPath, VPPath

Labelled = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # net(x, labels) with labels = t * 999


class TimeWindowFlow(torch.nn.Module):
    """v(x, s) = net(x, t_min + s (1 - t_min)) for a flow network ``net(x, t)`` trained on t in [t_min, 1]."""

    def __init__(self, net: torch.nn.Module, t_min: float = 1e-3):
        super().__init__()
        if not 0 <= t_min < 1:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
        self.net, self.t_min = net, t_min
        self.input_shape = getattr(net, "input_shape", None)

    @property
    def gaussian_path(self) -> RectifiedPath:
        """X_t = t X1 + (1 - t) X0 on the network's time t_min + s (1 - t_min)."""
        return RectifiedPath(self.t_min)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.t_min + t * (1 - self.t_min))


class VPSDEFlow(torch.nn.Module):
    """Probability-flow ODE of a continuous VP (``sub_vp=False``) or sub-VP SDE with a noise-predicting network.

    With beta(t) = b0 + t (b1 - b0) and m(t) = -t^2 (b1 - b0) / 4 - t b0 / 2 (log of the mean coefficient):
    VP: std = sqrt(1 - e^{2m}), g^2 = beta; sub-VP: std = 1 - e^{2m}, g^2 = beta (1 - e^{4m}). The score is
    -net(x, 999 t) / std and the ODE dx/dt = -beta x / 2 - g^2 score / 2, integrated from t = 1 to eps.
    """

    def __init__(self, net: Labelled, beta_min: float = 0.1, beta_max: float = 20.0, sub_vp: bool = False,
                 eps: float = 1e-3, label_scale: float = 999.0):
        super().__init__()
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.net = net
        self.input_shape = getattr(getattr(net, "__self__", net), "input_shape", None)   # a bound forward_labels
        self.beta_min, self.beta_max, self.sub_vp, self.eps, self.label_scale = (beta_min, beta_max, sub_vp, eps,
                                                                                 label_scale)

    @property
    def gaussian_path(self) -> VPPath:
        """The SDE's marginals in flow time (its diffusion time is the SDE time, as in DPM-Solver)."""
        return VPPath(self.beta_min, self.beta_max, self.eps, self.sub_vp)

    def sde_time(self, s: torch.Tensor) -> torch.Tensor:
        return 1 - s * (1 - self.eps)

    def marginal(self, t_sde: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean coefficient, std) of x_t given x_0."""
        t = torch.as_tensor(t_sde, dtype=torch.float64)
        m = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        std = -torch.expm1(2 * m) if self.sub_vp else torch.sqrt(-torch.expm1(2 * m))
        return torch.exp(m), std

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        t = self.sde_time(torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(-1))
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        m = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        if self.sub_vp:
            std, g2 = -torch.expm1(2 * m), beta * -torch.expm1(4 * m)
        else:
            std, g2 = torch.sqrt(-torch.expm1(2 * m)), beta
        out = self.net(x, (t * self.label_scale).to(x.dtype))           # -score * std
        shape = (-1,) + (1,) * (x.ndim - 1)
        drift = -0.5 * beta.reshape(shape).to(x.dtype) * x + (0.5 * g2 / std).reshape(shape).to(x.dtype) * out
        return drift * -(1 - self.eps)                                   # dx/ds = dx/dt * dt/ds

    def denoise(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The data prediction (x - std * eps) / mean at flow time s, from the network's eps = -score * std (what
        DPM-Solver's model_wrapper computes for a noise-prediction model)."""
        t = self.sde_time(torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(-1))
        mean, std = self.marginal(t)
        eps = self.net(x, (t * self.label_scale).to(x.dtype))
        shape = (-1,) + (1,) * (x.ndim - 1)
        return ((x - std.reshape(shape).to(x.dtype) * eps) / mean.reshape(shape).to(x.dtype))

    def extra_repr(self) -> str:
        kind = "sub-VP" if self.sub_vp else "VP"
        return f"{kind}, beta {self.beta_min:g}..{self.beta_max:g}, eps={self.eps:g}"


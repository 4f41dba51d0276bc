"""Analytic test problems with exact solutions, shared by the sampler tests."""

from __future__ import annotations

import math

import torch

from rfbench.models import DiffusionModel


class GaussianFlow:
    """The 1-RF velocity between N(0, I) and N(mu, s^2 I) with the independent coupling.

    X_t = t X1 + (1-t) X0 ~ N(t mu, sigma_t^2 I), sigma_t^2 = t^2 s^2 + (1-t)^2, and
    v(x, t) = E[X1 - X0 | X_t = x] = mu + (t s^2 - (1 - t)) / sigma_t^2 * (x - t mu).
    Its flow maps each x0 to mu + s * x0 exactly.
    """

    def __init__(self, mu: torch.Tensor, s: float):
        self.mu, self.s = mu, s
        self.input_shape = tuple(mu.shape)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        mu = self.mu.to(x)
        var = t**2 * self.s**2 + (1 - t) ** 2
        return mu + (t * self.s**2 - (1 - t)) / var * (x - t * mu)

    def exact(self, x0: torch.Tensor) -> torch.Tensor:
        return self.mu.to(x0) + self.s * x0


class GaussianEpsNet:
    """The exact eps-prediction for data N(mu, s^2 I) under a VP schedule, as a network of integer or
    fractional timesteps: x = sqrt(a) x1 + sqrt(1-a) eps, so E[eps | x] = sqrt(1-a) (x - sqrt(a) mu) / (a s^2 + 1 - a).
    """

    def __init__(self, mu: torch.Tensor, s: float, betas: torch.Tensor | None = None):
        self.mu, self.s = mu, s
        self.input_shape = tuple(mu.shape)
        self.model = DiffusionModel(self, betas)

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.model.alpha_bar(timesteps).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        mu = self.mu.to(x)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * self.s**2 + 1 - a)

    def exact_ode(self, x_start: torch.Tensor, a_start: float, a_end: float) -> torch.Tensor:
        """The probability-flow ODE keeps each point's standardised position: from alpha_bar a_start to a_end."""
        mu = self.mu.to(x_start)
        z = (x_start - math.sqrt(a_start) * mu) / math.sqrt(a_start * self.s**2 + 1 - a_start)
        return math.sqrt(a_end) * mu + math.sqrt(a_end * self.s**2 + 1 - a_end) * z


class TangentODE:
    """A nonlinear, non-autonomous ODE with a closed form: dx/dt = (1 + x^2) cos t, x(t) = tan(sin t + atan x0).

    Free of the special structure of linear problems (where some methods gain an order), so measured orders are
    the generic ones. Finite on [0, 1] for |x0| < tan(pi/2 - sin 1) ~ 0.89.
    """

    input_shape = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (1 + x**2) * torch.cos(t.to(x.dtype)).reshape(-1, *([1] * (x.ndim - 1)))

    @staticmethod
    def exact(x0: torch.Tensor, t: float = 1.0) -> torch.Tensor:
        return torch.tan(math.sin(t) + torch.atan(x0))


class GaussianMixtureFlow:
    """The 1-RF velocity between N(0, I) and a mixture of isotropic Gaussians sum_k pi_k N(mu_k, s_k^2 I) in d
    dimensions, with the independent coupling: nonlinear, and exact.

    Given component k, X_t ~ N(t mu_k, v_k I) with v_k = t^2 s_k^2 + (1 - t)^2 and the velocity is GaussianFlow's;
    v(x, t) = sum_k P(k | X_t = x) v_k(x, t). In EDM's variables (x_sigma = x_t / t, sigma = (1 - t) / t) its
    denoiser is D(x, sigma) = sum_k w_k (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)), w_k proportional to
    pi_k N(x; mu_k, (s_k^2 + sigma^2) I): :meth:`denoiser`.
    """

    def __init__(self, pis, mus, stds):
        self.pis = torch.as_tensor(pis, dtype=torch.float64)
        self.mus = torch.as_tensor(mus, dtype=torch.float64)          # (K, d)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        self.input_shape = (self.mus.shape[1],)

    def _mixture(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, comp: torch.Tensor) -> torch.Tensor:
        """sum_k P(k | x) comp_k for components N(mean_k, var_k I): mean (B|1, K, d), var (B|1, K, 1)."""
        d2 = ((x[:, None, :] - mean) ** 2).sum(-1, keepdim=True)
        log_w = self.pis.to(x).log()[None, :, None] - d2 / (2 * var) - 0.5 * x.shape[1] * var.log()
        w = (log_w - log_w.amax(dim=1, keepdim=True)).exp()
        return (w * comp).sum(1) / w.sum(1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype).reshape(-1, 1, 1)
        mus, s2 = self.mus.to(x)[None], self.stds.to(x)[None, :, None] ** 2
        var = t ** 2 * s2 + (1 - t) ** 2
        mean = t * mus
        return self._mixture(x, mean, var, mus + (t * s2 - (1 - t)) / var * (x[:, None, :] - mean))

    def denoiser(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """E[X1 | X1 + sigma eps = x], EDM's D(x, sigma)."""
        mus, s2 = self.mus.to(x)[None], self.stds.to(x)[None, :, None] ** 2
        var = s2 + sigma ** 2
        return self._mixture(x, mus, var, mus + s2 / var * (x[:, None, :] - mus))

"""The interfaces samplers see, as typing Protocols: a model is only a callable to them.

* :class:`FlowModel`: ``model(x, t) -> v`` with x (B, ...) and t (B,) in [0, 1] (t=0 source, t=1 data);
* :class:`DiscreteDiffusion`: a DDPM-style model on a discrete schedule of ``num_timesteps`` steps, with
  ``eps(x, timesteps)`` and ``alphas_cumprod`` (:class:`rfbench.models.DiffusionModel` is one; it is also a
  FlowModel through its probability-flow ODE).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class FlowModel(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DiscreteDiffusion(Protocol):
    num_timesteps: int
    alphas_cumprod: torch.Tensor

    def eps(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor: ...


def is_diffusion_model(model: Any) -> bool:
    """True for DDPM-style models (anything with ``eps(x, timesteps)`` and a discrete schedule)."""
    return callable(getattr(model, "eps", None)) and hasattr(model, "alphas_cumprod")

"""The interfaces samplers see, as typing Protocols: a model is only a callable to them.

* :class:`FlowModel`: ``model(x, t) -> v`` with x (B, ...) and t (B,) in [0, 1] (t=0 source, t=1 data);
* :class:`DiscreteDiffusion`: a DDPM-style model on a discrete schedule of ``num_timesteps`` steps, with
  ``eps(x, timesteps)`` and ``alphas_cumprod`` (:class:`rfbench.models.DiffusionModel` is one; it is also a
  FlowModel through its probability-flow ODE).

The kinds of model a suite holds (:data:`KINDS`): ``flow`` (sampled by ODE solvers), ``one-step`` (a distilled
map, one Euler step) and ``diffusion`` (a DDPM-style model: discrete samplers and its probability-flow ODE). A
solver declares the kinds it takes (``register_solver(models=...)``).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import torch


ModelKind = Literal["flow", "one-step", "diffusion"]
KINDS: tuple[str, ...] = ("flow", "one-step", "diffusion")


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


def stated_kind(model: Any) -> str | None:
    """What a model object is, as far as the object says: the kind it states (a ``kind`` attribute that is one of
    :data:`KINDS`), else "diffusion" for a DDPM-style model; None for any other callable (a flow or a one-step map,
    which look alike)."""
    kind = getattr(model, "kind", None)
    if isinstance(kind, str) and kind in KINDS:
        return kind
    return "diffusion" if is_diffusion_model(model) else None


def network_module(model: Any) -> torch.nn.Module | None:
    """The torch module that does a model's evaluations: the model itself, or a DiffusionModel's ``net``; None where
    that is not a module (a plain callable)."""
    net = getattr(model, "net", None) if is_diffusion_model(model) else model
    return net if isinstance(net, torch.nn.Module) else None

"""Baseline models: how each is built, trained (or loaded from the cache), with its recipe per suite.

``BASELINES[name].load_or_train(suite, cache, device)`` returns a model for ``rfbench.sample``: a flow
``v(x, t)`` or a ``DiffusionModel``. ``kind`` tells a suite which solvers make sense: ``"flow"`` (ODE solvers),
``"one-step"`` (a distilled map: one Euler step) or ``"diffusion"`` (ddim, ddpm and the probability-flow ODE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rfbench.registry import Registry


@dataclass(frozen=True)
class Baseline:
    name: str
    kind: str
    description: str
    load_or_train: Callable[..., Any]


BASELINES: Registry[Baseline] = Registry("baseline")

from baselines import ddpm, published, rectified_flow  # noqa: E402,F401  (register the families)

__all__ = ["BASELINES", "Baseline"]

"""A small MLP with a time input, for the toy suites: ``net(x, t) -> tensor like x``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MLPConfig:
    """Architecture of :class:`MLP`. ``time_scale`` multiplies the time input (1/T for DDPM timesteps)."""

    dim: int = 2
    hidden: int = 256
    depth: int = 3
    time_features: int = 16
    time_scale: float = 1.0

    def __post_init__(self):
        for name in ("dim", "hidden", "depth", "time_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"MLPConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.time_features % 2:
            raise ValueError(f"MLPConfig.time_features must be even, got {self.time_features}")

    def to_dict(self) -> dict:
        return asdict(self)


class MLP(nn.Module):
    """x (B, dim) and a time (B,) -> (B, dim). Time enters as t itself plus sin/cos features at log-spaced
    frequencies, concatenated to x; SiLU hidden layers."""

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        self.config = config
        self.input_shape = (config.dim,)
        half = config.time_features // 2
        self.register_buffer("freqs", math.pi * torch.logspace(0, 2, half), persistent=False)
        layers: list[nn.Module] = []
        width = config.dim + 1 + config.time_features
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype).reshape(-1, 1) * self.config.time_scale
        if t.shape[0] == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0], 1)
        angles = t * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, t, angles.sin(), angles.cos()], dim=1))

"""Toy distributions in low dimension, drawn reproducibly from seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from rfbench import noise


@dataclass(frozen=True)
class StandardNormal:
    """N(0, I) in ``dim`` dimensions; its seeded draws are exactly :func:`rfbench.noise.initial`'s."""

    dim: int = 2

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, self.dim), generator=generator)

    def sample_seeded(self, seeds: Sequence[int], stream: int = noise.STREAM_INITIAL) -> torch.Tensor:
        return noise.per_seed(seeds, lambda g: torch.randn((self.dim,), generator=g), stream=stream)


@dataclass(frozen=True)
class GaussianMixture:
    """Equal-weight mixture of isotropic Gaussians with the same ``std`` around ``means``."""

    means: tuple[tuple[float, ...], ...]
    std: float
    _means: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.means or len({len(m) for m in self.means}) != 1:
            raise ValueError(f"means must be a non-empty tuple of points of one dimension, got {self.means!r}")
        if not self.std > 0:
            raise ValueError(f"std must be > 0, got {self.std!r}")
        object.__setattr__(self, "_means", torch.tensor(self.means, dtype=torch.float32))

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        return self._means[k] + self.std * torch.randn((n, self.dim), generator=generator)

    def sample_seeded(self, seeds: Sequence[int], stream: int = noise.STREAM_DATA) -> torch.Tensor:
        return noise.per_seed(seeds, lambda g: self.sample(1, g)[0], stream=stream)


def circle_mixture(num_modes: int, radius: float, std: float, offset_deg: float = 0.0) -> GaussianMixture:
    """``num_modes`` Gaussians evenly spaced on a circle (the classic "8 Gaussians" when num_modes=8), the first at
    ``offset_deg`` degrees."""
    angle = lambda k: 2 * math.pi * k / num_modes + math.radians(offset_deg)   # noqa: E731
    means = tuple((round(radius * math.cos(angle(k)), 12), round(radius * math.sin(angle(k)), 12))
                  for k in range(num_modes))
    return GaussianMixture(means, std)


@dataclass(frozen=True)
class ToyProblem:
    """A source pi0 and a target pi1, with a fixed training set and a disjoint held-out reference set.

    Training data is drawn once from ``data_seed``; the reference set (for w2 and energy) from ``data_seed + 1``, so
    they never overlap. Evaluation x0 comes from seeds via :meth:`initial`.
    """

    source: StandardNormal | GaussianMixture
    target: GaussianMixture
    num_train: int = 20_000
    data_seed: int = 1234
    reference_size: int = 10_000      # held-out target points the metrics score samples against (w2: the first n)

    def __post_init__(self):
        if self.source.dim != self.target.dim:
            raise ValueError(f"source and target dimensions differ: {self.source.dim} vs {self.target.dim}")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.target.dim,)

    def train_target(self) -> torch.Tensor:
        return self.target.sample(self.num_train, torch.Generator().manual_seed(self.data_seed))

    def train_source(self) -> torch.Tensor | None:
        """A fixed training set of source points, for data-to-data problems (None for Gaussian noise)."""
        if isinstance(self.source, StandardNormal):
            return None
        return self.source.sample(self.num_train, torch.Generator().manual_seed(self.data_seed + 2))

    def reference(self, n: int) -> torch.Tensor:
        """The held-out target set for n samples: max(n, ``reference_size``) points (seed ``data_seed + 1``). The
        energy distance uses all of them; w2, which matches equal-size sets, the first n."""
        size = max(n, self.reference_size)
        return self.target.sample(size, torch.Generator().manual_seed(self.data_seed + 1))

    def initial(self, seeds: Sequence[int]) -> torch.Tensor:
        """x0 for evaluation: one draw of the source per seed (stream 0, the same for every model)."""
        return self.source.sample_seeded(seeds, stream=noise.STREAM_INITIAL)

    def independent_target(self, seeds: Sequence[int]) -> torch.Tensor:
        """X1 drawn independently of x0 from the same seeds (another stream): the independent coupling."""
        return self.target.sample_seeded(seeds, stream=noise.STREAM_DATA)

    def to_dict(self) -> dict:
        return {"source": _describe(self.source), "target": _describe(self.target), "num_train": self.num_train,
                "data_seed": self.data_seed}


def _describe(dist) -> dict:
    if isinstance(dist, StandardNormal):
        return {"kind": "standard_normal", "dim": dist.dim}
    return {"kind": "gaussian_mixture", "means": [list(m) for m in dist.means], "std": dist.std}

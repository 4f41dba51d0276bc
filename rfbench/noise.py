"""Seeded noise: the initial x0 of every sample, the per-step noise of stochastic samplers, and the fresh seeds of
a cell's timed repeats.

Every sample owns its seed. Each seed gets its own ``torch.Generator`` on the CPU, and the draws are moved to the
device afterwards, so the noise of a seed is the same whatever the batch size, the batch composition or the device
(the habit of NVlabs/edm's ``StackedRandomGenerator``). Samplers never draw their own noise: this module is the one
place noise comes from, so every model and solver in a sweep sees the same x0 for the same seed.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import torch

# Streams separate independent uses of one seed: x0, the per-step noise of stochastic samplers, data draws, the
# seeds of a cell's timed repeats (:func:`repeat_seeds`) and a sample's class (:func:`classes`).
STREAM_INITIAL = 0
STREAM_STEPS = 1
STREAM_DATA = 2
STREAM_REPEATS = 3
STREAM_CLASSES = 4


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: pass at least one seed (one per sample)")
    if min(seeds) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {min(seeds)}")
    return seeds


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be the shape of one sample, e.g. (2,) or (3, 32, 32); got {shape!r}") from None
    if any(s < 1 for s in out):
        raise ValueError(f"shape must have positive sizes, got {out}")
    return out


def generator_for(seed: int, stream: int = STREAM_INITIAL) -> torch.Generator:
    """A CPU generator for one (seed, stream); stream 0 is ``manual_seed(seed)`` itself."""
    gen = torch.Generator()
    if stream == STREAM_INITIAL:
        gen.manual_seed(int(seed))
    else:
        # SeedSequence mixes (seed, stream) into well-separated states; plain seed + stream would collide.
        gen.manual_seed(int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint64)[0]))
    return gen


def repeat_seeds(seeds: Sequence[int], run: int, salt: str) -> list[int]:
    """Fresh seeds for timed run ``run`` (>= 1) of the cell named ``salt``: one per seed, each from (seed, run, salt)
    alone, so a row's seed does not depend on the batch or process that samples it. A cell's repeats after its first
    run sample the suite's source at these seeds (x0, and the per-step noise of stochastic samplers) instead of
    sampling the first run's x0 again, so no repeat can reuse an earlier run's work; ``salt`` (the cell's label)
    makes every cell's repeats differ from every other cell's, so neither can a repeat reuse another cell's."""
    seeds = _check_seeds(seeds)
    if isinstance(run, bool) or not isinstance(run, int) or run < 1:
        raise ValueError(f"run must be an integer >= 1 (the first run samples the seeds themselves), got {run!r}")
    words = np.frombuffer(hashlib.sha256(salt.encode()).digest()[:8], dtype=np.uint32).tolist()
    # SeedSequence mixes its words well; 63 bits keep a derived seed a non-negative int64
    return [int(np.random.SeedSequence([s, STREAM_REPEATS, run, *words]).generate_state(1, np.uint64)[0] >> 1)
            for s in seeds]


def per_seed(seeds: Sequence[int], draw: Callable[[torch.Generator], torch.Tensor], *,
             stream: int = STREAM_INITIAL, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """Stack ``draw(generator)`` over seeds (one generator per seed, on the CPU), then move to ``device``."""
    seeds = _check_seeds(seeds)
    out = torch.stack([draw(generator_for(s, stream)) for s in seeds])
    return out.to(device=device, dtype=dtype if dtype is not None else out.dtype)


def initial(seeds: Sequence[int], shape: Sequence[int], *, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal x0 of shape ``(len(seeds), *shape)``, row i drawn from seed ``seeds[i]`` alone.
    ``shape`` is the shape of one sample, e.g. (2,) or (3, 32, 32); an int means (shape,)."""
    shape = _shape(shape)
    return per_seed(seeds, lambda g: torch.randn(shape, generator=g, dtype=torch.float32),
                    device=device, dtype=dtype)


def classes(seeds: Sequence[int], num_classes: int) -> torch.Tensor:
    """The class of each sample, uniform over 0 .. num_classes - 1: a (len(seeds),) int64 tensor on the CPU, row i
    drawn from seed ``seeds[i]`` alone (its own stream, apart from its noise), so a seed's class does not depend on
    the batch, the process or the device that samples it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return per_seed(seeds, lambda g: torch.randint(num_classes, (), generator=g), stream=STREAM_CLASSES)


class StepNoise:
    """Per-step noise for stochastic samplers: ``noise(i)`` is the N(0, I) draw of step ``i`` for every row.

    Row r's draws come from its own generator (seed ``seeds[r]``, stream ``STREAM_STEPS``), drawn in chunks whose
    size depends only on the sample shape, so a sample's noise does not depend on the batch it is in. Steps must be
    requested in order 0, 1, 2, ...
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.seeds = _check_seeds(seeds)
        self.shape = _shape(shape)
        self.device, self.dtype = device, dtype
        numel = int(np.prod(self.shape)) if self.shape else 1
        self.chunk = int(min(64, max(1, 2**16 // numel)))
        self._gens = [generator_for(s, STREAM_STEPS) for s in self.seeds]
        self._buffer: torch.Tensor | None = None  # (chunk, B, *shape)
        self._start = 0
        self._next = 0

    def __call__(self, step: int) -> torch.Tensor:
        if step != self._next:
            raise ValueError(f"StepNoise must be read in order: asked for step {step}, next is {self._next}")
        self._next += 1
        if self._buffer is None or step >= self._start + self.chunk:
            self._start = step
            draws = [torch.randn((self.chunk, *self.shape), generator=g) for g in self._gens]
            self._buffer = torch.stack(draws, dim=1).to(device=self.device, dtype=self.dtype)
        return self._buffer[step - self._start]


class SeedRows:
    """The x0 of a seed range, made on demand: ``rows[a:b]`` is ``make(seeds[a:b])``, exactly the rows the full
    tensor holds there (one generator per seed, :func:`initial`). Under torchrun every process but rank 0 (which
    scores each cell on the full x0) holds this instead of the full x0 (614 MB for 50,000 CIFAR-10 seeds) and makes
    only the rows of its own batches. Shaped like the full tensor: ``shape``, ``ndim``, ``dtype``, ``device``."""

    def __init__(self, make, seeds: Sequence[int], device: str | torch.device = "cpu"):
        self._make, self._seeds, self.device = make, list(seeds), torch.device(device)
        first = make(self._seeds[:1])
        self.dtype = first.dtype
        self.shape = torch.Size((len(self._seeds), *first.shape[1:]))
        self.ndim = len(self.shape)

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"SeedRows takes a slice of rows (rows[a:b]), got {index!r}")
        start, stop, _ = index.indices(len(self._seeds))
        return self._make(self._seeds[start:stop]).to(self.device)

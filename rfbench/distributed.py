"""Evaluation on several processes: ``torchrun --nproc_per_node=N benchmark.py ...``.

Every process samples its share of each cell's seed range and extracts its samples' features; the samples and
features are gathered in seed order, so rank 0 computes every metric on exactly the tensors a single process would
have, and rank 0 alone writes results. Shares are whole batches of the cell's batch plan (:func:`batch_plan`): with
the same ``--batch-size`` a run on N processes gives the metrics of a run on one (an adaptive solver's steps depend
on its batch, so the batches must be the same ones).

A :class:`World` of size 1 is the single-process run: every collective is then the identity, and the runner has
one code path for both.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

# Rank 0 trains models and computes reference features while the others wait in a collective: allow hours.
TIMEOUT = timedelta(minutes=float(os.environ.get("RFBENCH_DIST_TIMEOUT_MIN", 360)))


class PeerFailed(RuntimeError):
    """Another process (usually rank 0) failed in a step every process needs; it reports the cause itself."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run; ``World()`` is the single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device_index: int | None = None  # this process's GPU (nccl)
    backend: str | None = None       # "gloo" (tensors on the CPU) or "nccl" (tensors on this process's GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_objects(self, obj) -> list:
        """Every process's ``obj`` (picklable, small), in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def check(self, error: str | None, what: str) -> list[str]:
        """Share each process's error (None when it succeeded) for a step all of them take; returns the errors of
        the processes that failed, prefixed with their rank when there are several processes."""
        errors = self.all_objects(error)
        return [e if not self.active else f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None]

    def cat_rows(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Each process's rows (dim 0) concatenated in rank order, on rank 0, on the CPU; the other processes get
        None (only rank 0 computes metrics, so only it holds every sample and feature).

        A process with no rows passes None (when the seed range has fewer batches than processes); all processes
        must agree on the trailing shape and dtype, which come from the ones that have rows."""
        if not self.active:
            return tensor
        metas = self.all_objects(None if tensor is None else (tuple(tensor.shape), str(tensor.dtype)))
        present = [m for m in metas if m is not None]
        if not present:
            return None
        tail, dtype = present[0][0][1:], getattr(torch, present[0][1].replace("torch.", ""))
        if any(m[0][1:] != tail or m[1] != present[0][1] for m in present):
            raise ValueError(f"ranks disagree on the shape or dtype of gathered rows: {metas}")
        rows = [0 if m is None else m[0][0] for m in metas]
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        local = torch.zeros((max(rows), *tail), dtype=dtype, device=device)
        if tensor is not None and tensor.shape[0]:
            local[:tensor.shape[0]] = tensor.to(device)
        parts = [torch.empty_like(local) for _ in range(self.size)] if self.is_main else None
        dist.gather(local, parts, dst=0)
        if not self.is_main:
            return None
        return torch.cat([p[:n].cpu() for p, n in zip(parts, rows)])

    def broadcast_rows(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Rank 0's ``tensor`` on every process (on the CPU): what the others need to share a metric's work
        (the samples' features, the reference's). None when rank 0 passes None."""
        if not self.active:
            return tensor
        meta = self.all_objects(None if not self.is_main or tensor is None
                                else (tuple(tensor.shape), str(tensor.dtype)))[0]
        if meta is None:
            return None
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        dtype = getattr(torch, meta[1].replace("torch.", ""))
        buffer = (tensor.to(device=device).contiguous() if self.is_main
                  else torch.empty(meta[0], dtype=dtype, device=device))
        dist.broadcast(buffer, src=0)
        return buffer.cpu()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device: torch.device | str | None = None) -> World:
    """The world torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with its process
    group started: nccl when the run is on CUDA, else gloo. Without torchrun: the single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        count = torch.cuda.device_count()
        if count == 1:          # a launcher that shows each process its own GPU (CUDA_VISIBLE_DEVICES)
            local_device = 0
        elif local < count:
            local_device = local
        else:
            raise RuntimeError(f"rank {rank}: LOCAL_RANK {local} but this process sees {count} GPUs; run at most "
                               f"{count} processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return World(rank=rank, size=size, local_rank=local, backend=backend,
                 device_index=local_device if cuda else None)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank as torchrun sets it (0 without torchrun), before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def batch_plan(n: int, batch_size: int | None, world: World) -> tuple[int, list[tuple[int, int]]]:
    """The batch size and the (start, stop) row ranges of one cell's batches over ``n`` seeds, and which of them
    are this process's: the batches are split into contiguous blocks, one per rank, so that concatenating the ranks'
    rows in rank order gives seed order.

    Without a batch size a single process samples everything at once, and N processes take ``ceil(n / N)`` rows
    each; a single-process run with that ``--batch-size`` reproduces them exactly.
    """
    size = batch_size or math.ceil(n / world.size)
    batches = [(start, min(start + size, n)) for start in range(0, n, size)]
    k = len(batches)
    mine = batches[world.rank * k // world.size:(world.rank + 1) * k // world.size]
    return size, mine


def main_then_others(world: World, step: Callable[[], tuple[Any, str | None]], what: str) -> tuple[Any, list[str]]:
    """``step()`` (returning its result and an error string or None) on rank 0, then, when rank 0 succeeded, on
    the others, which thus find what rank 0 cached (a trained model) instead of training it at the same time.
    Returns this process's result and the errors of every process (empty when all succeeded)."""
    result, error = step() if world.is_main else (None, None)
    errors = world.check(error, what)
    if errors or not world.active:
        return result, errors
    if not world.is_main:
        result, error = step()
    return result, world.check(error, what)


def main_first(world: World, build: Callable[[bool, object], object],
               share: Callable[[object], object] = lambda result: None):
    """``build(True, None)`` on rank 0, then ``build(False, share(rank 0's result))`` on the others, which thus find
    what rank 0 cached (a trained extractor) instead of training it at the same time. An exception on one process
    is raised there and becomes :class:`PeerFailed` on the others, so none waits forever for one that stopped."""
    result, error = None, None
    if world.is_main:
        try:
            result = build(True, None)
        except Exception as exc:
            error = exc
        world.check(None if error is None else f"{type(error).__name__}: {error}", "rank 0")
        if error is not None:
            raise error
        world.all_objects(share(result))
    else:
        failed = world.check(None, "rank 0")
        if failed:
            raise PeerFailed(failed[0])
        shared = world.all_objects(None)[0]
        try:
            result = build(False, shared)
        except Exception as exc:
            error = exc
    if world.active:
        failed = world.check(None if error is None else f"{type(error).__name__}: {error}", "others")
        if error is not None:
            raise error
        if failed:
            raise PeerFailed(failed[0])
    return result

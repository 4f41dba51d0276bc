"""``--batch-size auto``: the largest batch whose model evaluation fits in a share of the GPU's free memory.

Probed, not estimated: the model is evaluated at batch sizes 8, 16, 32, ... on the device, and the peak memory each
needs is read from CUDA's allocator. The probe stops at the first size that needs more than ``fraction`` of the
memory that was free at the start (or runs out of memory), or at ``limit``. The rest of the memory is left for what
the solver keeps beside the model (rk45's stages, the samples of the cell, the feature extractor).

An adaptive solver's steps depend on its batch (its error norm spans the batch), so an automatic batch size makes
rk45's NFE depend on the GPU: rows record the batch size in solver_stats.
"""

from __future__ import annotations

import torch

FRACTION = 0.5       # of the free memory at the start of the probe
FIRST = 8
LIMIT = 4096         # a CIFAR-sized DDPM++ fills an H100 long before this; larger batches only change rk45's steps


def auto_batch_size(model, example: torch.Tensor, device: torch.device, limit: int = LIMIT,
                    fraction: float = FRACTION) -> int:
    """The probed batch size for ``model`` on the CUDA ``device``; ``example``: one input row, shape (1, ...)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"auto batch size probes CUDA memory; device {device} is not a CUDA device")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    example = example[:1].to(device)
    torch.cuda.synchronize(device)
    free, _ = torch.cuda.mem_get_info(device)
    budget = fraction * free
    best, size = 1, min(FIRST, limit)
    while True:
        x = None
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            x = example.expand(size, *example.shape[1:]).contiguous()
            with torch.no_grad():
                model(x, torch.full((size,), 0.5, dtype=x.dtype, device=device))
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
        except torch.cuda.OutOfMemoryError:
            peak = float("inf")
        del x
        torch.cuda.empty_cache()
        if peak > budget:
            break
        best = size
        if size >= limit:
            break
        size = min(2 * size, limit)
    return best

"""Arithmetic of the network evaluations in a sampler: ``precision="fp32" | "tf32" | "bf16" | "fp16"``.

Only the network runs in reduced precision: :class:`rfbench.samplers.base.CountingModel` evaluates it under
``torch.autocast`` (bf16, fp16) and returns its output in the state's dtype, so the solver's state, its step
arithmetic and every accumulation stay float32. tf32 lets CUDA's float32 matrix products and convolutions use
TensorFloat-32; fp32 turns that off for both (PyTorch's default allows it for convolutions). Numbers change with the
precision, so a run records it in every row and in the cell key.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision (--dtype) must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@contextlib.contextmanager
def float32_mode(precision: str) -> Iterator[None]:
    """float32 matrix products and convolutions in TF32 (``tf32``) or in full float32 (every other precision: the
    autocast ones run their float32 leftovers exactly), restored afterwards."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def evaluation(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context one network evaluation runs in: autocast to bf16/fp16 on ``device``'s type, else nothing."""
    dtype = AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

"""The one device default: cuda when there is one, else cpu; and what a row says it ran on."""

from __future__ import annotations

import platform

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or "auto" -> cuda when there is one, else cpu; anything else must be a valid torch device."""
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def device_name(device: torch.device) -> str:
    """The ``device`` column: the GPU's name, or the CPU (the threads a cell used are in its own column)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing must not stop before the GPU does)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

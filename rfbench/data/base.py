"""What every dataset shares: images as saved (uint8) and as models see them (float in [-1, 1]), their content
hash, and the error for data that is not where it should be."""

from __future__ import annotations

import hashlib

import torch


class DatasetNotFoundError(FileNotFoundError):
    """A data folder is missing or does not hold the expected files."""


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] -> uint8 in [0, 255], rounding as a saved PNG would (values outside are clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def dequantize(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1] (v / 127.5 - 1); ``quantize`` gives the bytes back exactly."""
    return images.float() / 127.5 - 1


def image_fingerprint(images: torch.Tensor) -> str:
    """SHA-1 of images as saved (quantised bytes): identifies a data set wherever it was read from."""
    return hashlib.sha1(quantize(images).numpy().tobytes()).hexdigest()

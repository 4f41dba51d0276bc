"""Feature extractors for image metrics, registered by name; every result row records which one was used.

An extractor takes images as they would be saved, uint8 (N, C, H, W) in [0, 255] (use :func:`quantize` on
samples in [-1, 1]), so real and generated images pass through the same pipeline.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rfbench.models.checkpoint import CheckpointError, config_hash, jsonable, load_checkpoint, save_checkpoint
from rfbench.registry import Registry


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] -> uint8 in [0, 255], rounding as a saved PNG would (values outside are clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class FeatureExtractor:
    """Interface: ``features(images_uint8) -> (N, dim)`` float64, and ``logits`` when ``num_classes`` is set."""

    name: str
    dim: int
    num_classes: int | None
    resize_mode: str
    resolution: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# name -> factory(cache_dir, device) -> FeatureExtractor
EXTRACTORS: Registry[Callable[..., FeatureExtractor]] = Registry("feature extractor")


# -- digits: a small CNN trained by rfbench on sklearn's digits -------------------------------------------------

@dataclass(frozen=True)
class DigitsCNNConfig:
    channels: tuple[int, int] = (32, 64)
    features: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    version: int = 1  # bump when the training code changes


class DigitsCNN(nn.Module):
    """8x8 grayscale -> 128 penultimate features -> 10 logits (the role LeNet plays for MNIST in the literature)."""

    def __init__(self, config: DigitsCNNConfig = DigitsCNNConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * 16, config.features), nn.ReLU())
        self.head = nn.Linear(config.features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


def _to_input(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"the digits extractor takes uint8 images of shape (N, 1, 8, 8); got {images.dtype} "
                         f"{tuple(images.shape)} (use rfbench.metrics.features.quantize on samples in [-1, 1])")
    return images.float() / 127.5 - 1


def train_digits_cnn(config: DigitsCNNConfig = DigitsCNNConfig()) -> tuple[DigitsCNN, float]:
    """Train on the digits train split (deterministic on the CPU); return the network and held-out accuracy."""
    from rfbench.data.digits import load_digits

    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    x_train, x_test = _to_input(quantize(x_train)), _to_input(quantize(x_test))  # the metric pipeline's input
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = DigitsCNN(config)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for idx in torch.randperm(len(y_train), generator=gen).split(config.batch_size):
            loss = nn.functional.cross_entropy(net(x_train[idx])[1], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_test)[1].argmax(1) == y_test).double().mean().item()
    return net, accuracy


class DigitsExtractor(FeatureExtractor):
    name = "digits"
    num_classes = 10
    resize_mode = "none"
    resolution = 8

    def __init__(self, net: DigitsCNN, accuracy: float, checkpoint: str, device: str | torch.device = "cpu"):
        self.net = net.to(device).eval()
        self.dim = net.head.in_features
        self.accuracy = accuracy
        self.checkpoint = checkpoint
        self.device = device

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(_to_input(images).to(self.device))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images)[0].double().cpu()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images)[1].double().cpu()


def digits_extractor(cache_dir: str | os.PathLike, device: str | torch.device = "cpu",
                     config: DigitsCNNConfig = DigitsCNNConfig(), log: Callable[[str], None] = print
                     ) -> DigitsExtractor:
    """The digits CNN from ``cache_dir``, trained (about 20 s on 2 CPU cores) and stored on first use."""
    spec = asdict(config)
    key = config_hash(spec)
    path = Path(cache_dir) / "extractors" / f"digits-cnn-{key}.pt"
    net = DigitsCNN(config)
    if path.exists():
        try:
            payload = load_checkpoint(path, net, expected_config=jsonable(spec))
            return DigitsExtractor(net, payload["accuracy"], path.stem, device)
        except CheckpointError as exc:
            log(f"ignoring unusable {path} ({exc}); training the digits CNN again")
    start = time.perf_counter()
    net, accuracy = train_digits_cnn(config)
    save_checkpoint(path, net, jsonable(spec), accuracy=accuracy)
    log(f"trained the digits CNN in {time.perf_counter() - start:.1f} s: held-out accuracy {accuracy:.4f} -> {path}")
    return DigitsExtractor(net, accuracy, path.stem, device)


EXTRACTORS.add("digits", digits_extractor)

"""Feature extractors for image metrics, registered by name; every result row records which one was used: the
digits CNN and the labelled-data classifier here, Inception in :mod:`rfbench.metrics.inception`, the interface in
:mod:`rfbench.metrics.extractor`.

An extractor takes images as they would be saved, uint8 (N, C, H, W) in [0, 255] (use :func:`quantize` on
samples in [-1, 1]), so real and generated images pass through the same pipeline.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from rfbench.data.base import dequantize, quantize  # noqa: F401  (quantize: public here too)
from rfbench.metrics.extractor import FeatureExtractor, MissingLogitsError  # noqa: F401  (public here too)
from rfbench.metrics.inception import (FID_HELPER_FILE, FID_HELPER_SHA1, INCEPTION_FILE,  # noqa: F401  (public here too)
                                       INCEPTION_MODES, InceptionExtractor, InceptionWeights, InceptionWeightsError,
                                       NoInceptionWeightsError, clean_fid_weights_path, fid_helper_weights_path,
                                       find_inception_weights, inception_extractor)
from rfbench.models.checkpoint import CheckpointError, config_hash, jsonable, load_checkpoint, save_checkpoint
from rfbench.registry import Registry


# name -> factory(cache_dir, device, *, log, problem, **options) -> FeatureExtractor
EXTRACTORS: Registry[Callable[..., FeatureExtractor]] = Registry("feature extractor")


def register_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
    """Register a feature extractor (as torch-fidelity's ``register_feature_extractor``): ``factory(cache_dir,
    device, *, log, problem, **options)`` returns a :class:`FeatureExtractor`, whose ``extract(uint8 images)`` gives
    (features (N, dim) float64, logits (N, classes) or None). Suites name it by ``name``."""
    if not callable(factory):
        raise TypeError(f"extractor {name}: the factory must be callable, got {type(factory).__name__}")
    return EXTRACTORS.add(name, factory)


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


def _check_uint8(name: str, images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"the {name} extractor takes uint8 images of shape (N, {', '.join(map(str, shape))}); got "
                         f"{images.dtype} {tuple(images.shape)} (use rfbench.metrics.features.quantize on samples in "
                         f"[-1, 1])")
    return dequantize(images)


def _to_input(images: torch.Tensor) -> torch.Tensor:
    return _check_uint8("digits", images, (1, 8, 8))


def _train_classifier(net: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                      y_test: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int,
                      eval_batch: int = 2048) -> tuple[nn.Module, float]:
    """Adam on cross-entropy, ``epochs`` passes in a seeded order; returns the network and its test accuracy."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(net(x_train[idx])[1], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(x)[1].argmax(1) == y).sum()) for x, y in zip(x_test.split(eval_batch),
                                                                          y_test.split(eval_batch)))
    return net, correct / max(len(y_test), 1)


def train_digits_cnn(config: DigitsCNNConfig = DigitsCNNConfig()) -> tuple[DigitsCNN, float]:
    """Train on the digits train split (deterministic on the CPU); return the network and held-out accuracy."""
    from rfbench.data.digits import load_digits

    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    x_train, x_test = _to_input(quantize(x_train)), _to_input(quantize(x_test))  # the metric pipeline's input
    net = _seeded(lambda: DigitsCNN(config), config.seed)
    return _train_classifier(net, x_train, y_train, x_test, y_test, epochs=config.epochs,
                             batch_size=config.batch_size, lr=config.lr, seed=config.seed)


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


class ClassifierExtractor(FeatureExtractor):
    """Penultimate features and logits of a small CNN trained by rfbench on labelled images of the suite's data
    (the role LeNet plays for MNIST in the literature). ``identity`` is the checkpoint's name, which carries a
    hash of the training config and data: another classifier gives other features, hence other reference keys."""

    num_classes = 10
    resize_mode = "none"

    @property
    def identity(self) -> str:
        return self.checkpoint

    def __init__(self, name: str, net: nn.Module, shape: tuple[int, int, int], accuracy: float, checkpoint: str,
                 device: str | torch.device = "cpu", batch_size: int = 2048):
        self.name = name
        self.net = net.to(device).eval()
        self.shape = tuple(shape)
        self.resolution = self.shape[-1]
        self.dim = net.head.in_features
        self.accuracy = accuracy
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _check_uint8(self.name, images, self.shape)
        feats, logits = [], []
        for chunk in x.split(self.batch_size):
            f, lg = self.net(chunk.to(self.device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        if not feats:
            return torch.zeros(0, self.dim, dtype=torch.float64), torch.zeros(0, 10, dtype=torch.float64)
        return torch.cat(feats), torch.cat(logits)


class DigitsExtractor(ClassifierExtractor):
    def __init__(self, net: DigitsCNN, accuracy: float, checkpoint: str, device: str | torch.device = "cpu"):
        super().__init__("digits", net, (1, 8, 8), accuracy, checkpoint, device)


def _cached_classifier(path: Path, spec: dict, make: Callable[[], nn.Module],
                       train: Callable[[], tuple[nn.Module, float]], what: str,
                       log: Callable[[str], None]) -> tuple[nn.Module, float]:
    net = make()
    if path.exists():
        try:
            payload = load_checkpoint(path, net, expected_config=jsonable(spec))
            return net, payload["accuracy"]
        except CheckpointError as exc:
            log(f"ignoring unusable {path} ({exc}); training the {what} again")
    start = time.perf_counter()
    net, accuracy = train()
    save_checkpoint(path, net, jsonable(spec), accuracy=accuracy)
    log(f"trained the {what} in {time.perf_counter() - start:.1f} s: held-out accuracy {accuracy:.4f} -> {path}")
    return net, accuracy


def digits_extractor(cache_dir: str | os.PathLike, device: str | torch.device = "cpu",
                     config: DigitsCNNConfig = DigitsCNNConfig(), log: Callable[[str], None] = print,
                     problem=None) -> DigitsExtractor:
    """The digits CNN from ``cache_dir``, trained (about 20 s on 2 CPU cores) and stored on first use.
    ``problem`` is accepted for the common factory signature; the digits CNN is always trained on the digits."""
    if problem is not None and getattr(problem, "dataset", "digits") != "digits":
        raise ValueError(f"the digits extractor scores 8x8 sklearn digits; suite data is {problem.dataset!r} "
                         f"(use the classifier or inception extractor)")
    spec = asdict(config)
    path = Path(cache_dir) / "extractors" / f"digits-cnn-{config_hash(spec)}.pt"
    net, accuracy = _cached_classifier(path, spec, lambda: DigitsCNN(config), lambda: train_digits_cnn(config),
                                       "digits CNN", log)
    return DigitsExtractor(net, accuracy, path.stem, device)


EXTRACTORS.add("digits", digits_extractor)


# -- classifier: a small CNN trained by rfbench on a labelled 28x28 dataset (MNIST, Fashion-MNIST) ---------------

@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)
    features: int = 128
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    version: int = 1  # bump when the training code changes


class ImageCNN(nn.Module):
    """(C, 28, 28) -> conv 3x3, pool, conv 3x3, pool -> 128 penultimate features (ReLU) -> 10 logits."""

    def __init__(self, in_channels: int, size: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * (size // 4) ** 2, config.features), nn.ReLU())
        self.head = nn.Linear(config.features, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


LABELLED = ("mnist", "fashion-mnist")


def classifier_extractor(cache_dir: str | os.PathLike, device: str | torch.device = "cpu", *, problem,
                         config: ClassifierConfig = ClassifierConfig(), log: Callable[[str], None] = print
                         ) -> ClassifierExtractor:
    """A CNN trained on the labelled train split of the suite's data (``problem``: dataset, data_dir), scored on
    its test split, stored in ``cache_dir`` under a hash of its config and of the training images and labels.
    About 37 s per epoch of MNIST's 60,000 images on 2 CPU cores (3 epochs: 98.7 % test accuracy on MNIST,
    90.0 % on Fashion-MNIST)."""
    from rfbench.data.mnist import load_mnist_labels, load_mnist_uint8

    dataset = getattr(problem, "dataset", None)
    if dataset not in LABELLED:
        raise ValueError(f"the classifier extractor trains on labelled data ({', '.join(LABELLED)}); suite data is "
                         f"{dataset!r}")
    data_dir = problem.data_dir
    x_train = torch.from_numpy(load_mnist_uint8(dataset, "train", data_dir)).unsqueeze(1)
    y_train = torch.from_numpy(load_mnist_labels(dataset, "train", data_dir)).long()
    shape = tuple(x_train.shape[1:])
    import hashlib
    data_sha1 = hashlib.sha1(x_train.numpy().tobytes() + y_train.numpy().astype(np.uint8).tobytes()).hexdigest()
    spec = {**asdict(config), "dataset": dataset, "shape": list(shape), "train_sha1": data_sha1}
    path = Path(cache_dir) / "extractors" / f"{dataset}-cnn-{config_hash(spec)}.pt"

    def train():
        x_test = torch.from_numpy(load_mnist_uint8(dataset, "test", data_dir)).unsqueeze(1)
        y_test = torch.from_numpy(load_mnist_labels(dataset, "test", data_dir)).long()
        net = _seeded(lambda: ImageCNN(shape[0], shape[-1], config), config.seed)
        return _train_classifier(net, dequantize(x_train), y_train, dequantize(x_test), y_test,
                                 epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed)

    net, accuracy = _cached_classifier(path, spec, lambda: ImageCNN(shape[0], shape[-1], config), train,
                                       f"{dataset} classifier", log)
    return ClassifierExtractor("classifier", net, shape, accuracy, path.stem, device)


EXTRACTORS.add("classifier", classifier_extractor)
EXTRACTORS.add("inception", inception_extractor)     # rfbench/metrics/inception.py

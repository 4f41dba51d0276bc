"""Small image datasets written in their real on-disk formats (IDX, gzip'd IDX), from real images: sklearn's
bundled handwritten digits upscaled to 28x28, with their true labels."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def digits_28(n: int, seed: int = 0, with_labels: bool = False):
    """``n`` real handwritten digits (sklearn's 8x8) upscaled to 28x28 uint8 (and their labels 0-9)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    data = load_digits()
    idx = np.random.default_rng(seed).permutation(len(data.target))[:n]
    images = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
                       for im in data.images[idx]])
    return (images, data.target[idx].astype(np.uint8)) if with_labels else images


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """IDX3 for (N, rows, cols) images, IDX1 for (N,) labels; ``compress`` appends .gz to the name."""
    magic = {3: b"\x00\x00\x08\x03", 1: b"\x00\x00\x08\x01"}[array.ndim]
    blob = magic + b"".join(int(v).to_bytes(4, "big") for v in array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(blob)
    else:
        Path(path).write_bytes(blob)


def write_mnist_folder(root, n_train: int, n_test: int, compress: bool = True, seed: int = 0) -> dict:
    """The four MNIST/Fashion-MNIST files in ``root``; returns the arrays written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images, labels = digits_28(n_train + n_test, seed=seed, with_labels=True)
    parts = {"train": (images[:n_train], labels[:n_train]), "test": (images[n_train:], labels[n_train:])}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(root / f"{prefix}-images-idx3-ubyte", parts[split][0], compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", parts[split][1], compress)
    return parts

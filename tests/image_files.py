"""Small image datasets written in their real on-disk formats from real images: IDX (gzip'd or not) from sklearn's
bundled handwritten digits upscaled to 28x28 with their true labels; CIFAR-10's python pickles from crops of
sklearn's bundled photographs."""

from __future__ import annotations

import gzip
import pickle
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


def _photo_crops(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        y, x = rng.integers(img.shape[0] - 32), rng.integers(img.shape[1] - 32)
        out.append(img[y:y + 32, x:x + 32].transpose(2, 0, 1))   # CHW, as CIFAR stores each row
    return np.stack(out).astype(np.uint8)


def write_cifar10(root, per_batch: int = 4, n_test: int = 3, bytes_keys: bool = False) -> dict:
    """cifar-10-batches-py with five train batches, a test batch and batches.meta; returns what was written.
    Keys are str, as the original Python 2 files load with encoding="latin1"; ``bytes_keys`` writes bytes keys, as
    a copy re-pickled after loading with encoding="bytes" would have."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    written = {"train": ([], []), "test": ([], [])}
    names = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for i, (name, split, n) in enumerate(names):
        images = _photo_crops(n, seed=i)
        labels = [(i + j) % 10 for j in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({key("batch_label"): key(f"batch {i}"), key("labels"): labels,
                         key("data"): images.reshape(n, 3072), key("filenames"): [key(f"{j}.png") for j in range(n)]},
                        f, protocol=2)
        written[split][0].append(images)
        written[split][1].extend(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({key("label_names"): [key(c) for c in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                            "frog", "horse", "ship", "truck")],
                     key("num_cases_per_batch"): per_batch, key("num_vis"): 3072}, f, protocol=2)
    return {s: (np.concatenate(v[0]), np.array(v[1])) for s, v in written.items()}

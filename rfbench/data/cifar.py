"""CIFAR-10 from local files in the python-version layout (``cifar-10-batches-py``, as torchvision and the official
tarball unpack it); nothing is downloaded.

``data_dir`` is either the ``cifar-10-batches-py`` folder or a folder holding it. The train split is
``data_batch_1`` .. ``data_batch_5`` (50,000 images), the test split ``test_batch`` (10,000). Each file is a pickle
of a dict with ``data`` (uint8, N x 3072, each row one image as 3 x 32 x 32 planes: red, green, blue) and ``labels``
(N ints in 0-9); the original files were written by Python 2, so the keys may come back as bytes or str.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rfbench.data.base import DatasetNotFoundError, dequantize, load_data_pickle
from rfbench.data.registry import Dataset, register_dataset

FOLDER = "cifar-10-batches-py"
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
HINT = ("CIFAR-10's python version (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, or "
        "torchvision.datasets.CIFAR10(root, download=True) on a machine with internet), unpacked so that DIR/" + FOLDER
        + "/data_batch_1 exists")


def _root(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise DatasetNotFoundError(f"cifar10 needs --data-dir DIR: {HINT}")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"--data-dir {root} does not exist; expected {HINT}")
    if (root / FOLDER).is_dir():
        root = root / FOLDER
    return root


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = load_data_pickle(f, path, "CIFAR-10 batch file")
    except DatasetNotFoundError:
        raise
    except Exception as exc:  # truncated or not a pickle
        raise DatasetNotFoundError(f"{path} is not a CIFAR-10 batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DatasetNotFoundError(f"{path} is not a CIFAR-10 batch file (a pickled dict with 'data' and 'labels'; "
                                   f"found {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetNotFoundError(f"{path} is not a CIFAR-10 batch file: keys {sorted(batch)}, expected 'data' and "
                                   f"'labels'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetNotFoundError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetNotFoundError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {data.shape[0]} "
                                   f"images; expected one label in 0-9 per image")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def check_cifar10(split: str = "train", data_dir: str | Path | None = None) -> None:
    """Raise the loader's error if the split's files are not there (without reading them)."""
    root = _root(data_dir)
    missing = [name for name in FILES[split] if not (root / name).is_file()]
    if missing:
        raise DatasetNotFoundError(f"{root} lacks {', '.join(missing)} (CIFAR-10 {split} split); expected {HINT}")


def load_cifar10_uint8(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of ``split`` ("train" or "test"), in file order."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_cifar10(split, data_dir)
    root = _root(data_dir)
    parts = [_read_batch(root / name) for name in FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(split: str = "train", data_dir: str | Path | None = None):
    """float32 (N, 3, 32, 32) in [-1, 1] (uint8 v -> v / 127.5 - 1)."""
    import torch
    return dequantize(torch.from_numpy(load_cifar10_uint8(split, data_dir)[0]))


register_dataset(Dataset("cifar10", load_cifar10, check=check_cifar10,
                         files=lambda data_dir: Path(data_dir).expanduser() if data_dir else None,
                         description="CIFAR-10 python version (cifar-10-batches-py), 50,000 train / 10,000 test"))

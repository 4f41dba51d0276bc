"""The dataset registry: each image dataset says how to load a split, how to check its files without reading them,
and which files it is read from (so a cached fingerprint knows when they changed). Local files only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rfbench.registry import Registry


@dataclass(frozen=True)
class Dataset:
    """A registered image dataset.

    load: ``load(split, data_dir) -> float32 (N, C, H, W) in [-1, 1]``.
    check: ``check(split, data_dir)`` raises :class:`~rfbench.data.base.DatasetNotFoundError` (naming the folder
        and the files expected) when the split is not there; cheap, nothing is read. None: always there.
    files: ``files(data_dir) -> Path | None``, the file or folder the data is read from (None: not known).
    bundled: the data ships with a package (sklearn's digits): ``--data-dir`` does not apply, and it never changes.
    """

    name: str
    load: Callable[[str, str | None], torch.Tensor]
    splits: tuple[str, ...] = ("train", "test")
    check: Callable[[str, str | None], None] | None = None
    files: Callable[[str | None], Path | None] | None = None
    bundled: bool = False
    description: str = ""

    def __post_init__(self):
        if not callable(self.load):
            raise TypeError(f"dataset {self.name}: load must be a callable load(split, data_dir)")


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(dataset: Dataset) -> Dataset:
    """Register an image dataset (a plugin's own data is registered the same way as rfbench's)."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"register_dataset takes an rfbench.data.Dataset, got {type(dataset).__name__}")
    return DATASETS.add(dataset.name, dataset)


def load_images(dataset: str, split: str, data_dir: str | None = None) -> torch.Tensor:
    """A split of a registered dataset, checked to be float32 (N, C, H, W)."""
    entry = DATASETS[dataset]
    if split not in entry.splits:
        raise ValueError(f"dataset {dataset} has splits {', '.join(entry.splits)}, not {split!r}")
    images = entry.load(split, data_dir)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.float32:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"dataset {dataset} ({split}) gave {got}; the loader must return float32 (N, C, H, W) in "
                         f"[-1, 1]")
    return images


def check_dataset(dataset: str, split: str, data_dir: str | None) -> None:
    """Raise the dataset's DatasetNotFoundError when a split read from files is not there; nothing is read."""
    entry = DATASETS[dataset]
    if entry.check is not None:
        entry.check(split, data_dir)


def files_signature(dataset: str, data_dir: str | None) -> tuple:
    """(path, size, mtime) of every file a dataset may be read from; () for data bundled with a package."""
    entry = DATASETS[dataset]
    if entry.bundled:
        return ()
    root = entry.files(data_dir) if entry.files is not None else (Path(data_dir).expanduser() if data_dir else None)
    if root is None or not root.exists():
        return ()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))

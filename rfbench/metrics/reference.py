"""Reference statistics: computed once per (dataset, split, extractor, resize mode, resolution), then reused.

The preprocessing (resize mode) and the resolution are part of a statistic's identity, as in clean-fid: the same
images through another resize give another reference.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from rfbench.data.base import object_arrays_problem
from rfbench.files import atomic_write
from rfbench.metrics.image import GaussianStats, StatsAccumulator


class ReferenceFileError(ValueError):
    """A ``--ref-stats`` file that is missing, unreadable or does not fit the extractor, or a cached reference file
    that holds Python objects."""


def _plain_cache_file(path: Path) -> None:
    if (problem := object_arrays_problem(path)) is not None:
        raise ReferenceFileError(f"{problem}; remove it to recompute")


@dataclass(frozen=True)
class ReferenceKey:
    """What determines a reference statistic. ``resolution`` is the image size fed to the data pipeline."""

    dataset: str
    split: str
    extractor: str
    resize_mode: str
    resolution: int
    fingerprint: str = ""   # e.g. a hash of the images: the same name read from another folder is another key

    def __post_init__(self):
        for name in ("dataset", "split", "extractor", "resize_mode") + (("fingerprint",) if self.fingerprint else ()):
            value = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
                raise ValueError(f"ReferenceKey.{name} must be a plain name (letters, digits, . _ -), got {value!r}")
        if self.resolution < 1:
            raise ValueError(f"ReferenceKey.resolution must be >= 1, got {self.resolution}")

    def filename(self) -> str:
        tail = f"_{self.fingerprint}" if self.fingerprint else ""
        return f"{self.dataset}_{self.split}_{self.extractor}_{self.resize_mode}_{self.resolution}{tail}.npz"


def reference_stats(key: ReferenceKey, cache_dir: str | os.PathLike,
                    features: Callable[[], Iterable[np.ndarray]]) -> tuple[GaussianStats, Path]:
    """Load the statistics for ``key`` from ``cache_dir``, or stream ``features()`` (an iterable of (B, D)
    batches) into them and store them there. Returns the statistics and the file they live in."""
    path = Path(cache_dir) / "reference" / key.filename()
    if path.exists():
        _plain_cache_file(path)
        stats = GaussianStats.load(path)
        with np.load(path, allow_pickle=False) as data:
            stored = {k[len("meta_"):]: str(data[k]) for k in data.files if k.startswith("meta_")}
        expected = {k: str(v) for k, v in asdict(key).items()}
        if stored and stored != expected:  # a file named for this key that says otherwise was not written by us
            raise ValueError(f"{path} holds statistics for {stored}, not {expected}; remove it to recompute")
        return stats, path
    acc = StatsAccumulator()
    for batch in features():
        acc.update(batch)
    stats = acc.stats()
    stats.save(path, **{k: str(v) for k, v in asdict(key).items()})
    return stats, path


def reference_features(key: ReferenceKey, cache_dir: str | os.PathLike,
                       compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, Path]:
    """The reference set's features (N, D) for ``key``, from ``cache_dir`` or computed once by ``compute()`` and
    stored (float32, as extractors produce them: the float64 copy returned equals the computed one). Precision/
    recall and KID need the features themselves, not only their statistics; with a content fingerprint in the key
    a stored file can only belong to the same images and extractor."""
    path = Path(cache_dir) / "reference" / (key.filename()[:-len(".npz")] + ".features.npy")
    if path.exists():
        _plain_cache_file(path)
        return np.load(path, allow_pickle=False).astype(np.float64), path
    features = np.asarray(compute())
    stored = features.astype(np.float32)
    if not np.array_equal(stored.astype(features.dtype), features):
        raise ValueError(f"reference features for {key} are not float32-representable; refusing to store a rounded "
                         f"copy at {path}")
    atomic_write(path, lambda fh: np.save(fh, stored))
    return stored.astype(np.float64), path


def load_reference_file(path: str | os.PathLike, dim: int) -> tuple[np.ndarray | None, GaussianStats, str]:
    """A reference given as a file instead of computed from images: ``(features or None, statistics, what it
    held)``. Accepted ``.npz`` layouts: ``mu`` and ``sigma`` (clean-fid's ``cifar10_clean_train_32.npz``, rfbench's
    own reference files; FID only) or ``pool_3`` features (score-SDE's ``cifar10_stats.npz``; every metric). ``dim``
    is the extractor's feature dimension, which the file must match."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(f"--ref-stats {path}: no such file")
    if (problem := object_arrays_problem(path)) is not None:
        raise ReferenceFileError(f"--ref-stats {problem}")
    try:
        data = np.load(path, allow_pickle=False)
        files = list(data.files)
    except Exception as exc:
        raise ReferenceFileError(f"--ref-stats {path} is not a readable .npz ({type(exc).__name__}: {exc})") from None
    with data:
        if "pool_3" in files:
            features = np.asarray(data["pool_3"], dtype=np.float64).reshape(len(data["pool_3"]), -1)
            if features.shape[1] != dim:
                raise ReferenceFileError(f"--ref-stats {path}: pool_3 features are {features.shape[1]}-d; the "
                                         f"extractor's are {dim}-d")
            return features, GaussianStats.from_features(features), f"{len(features)} pool_3 features"
        if "mu" in files and "sigma" in files:
            n = int(data["n"]) if "n" in files else 0
            stats = GaussianStats(data["mu"], data["sigma"], n)
            if stats.mu.shape[0] != dim:
                raise ReferenceFileError(f"--ref-stats {path}: mu is {stats.mu.shape[0]}-d; the extractor's "
                                         f"features are {dim}-d")
            return None, stats, "mu/sigma" + (f" of {n} images" if n else "")
    raise ReferenceFileError(f"--ref-stats {path} holds {', '.join(files) or 'nothing'}; expected 'mu' and "
                             f"'sigma' (clean-fid) or 'pool_3' features (score-SDE)")

"""Image problems: Gaussian noise (t=0) to a dataset of real images (t=1), all read from local files.

Images are float32 (N, C, H, W) in [-1, 1]. ``reference`` is the set the image metrics compare against (the
training split, as FID on CIFAR-10 uses the training images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from rfbench import noise
from rfbench.data.base import DatasetNotFoundError, dequantize, image_fingerprint, quantize  # noqa: F401 (public)
from rfbench.data.registry import DATASETS, Dataset, check_dataset, files_signature, load_images, register_dataset  # noqa: F401

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# the most pixels an image file may have: the suites' images are at most 32x32, a folder of 4096x4096 samples still
# reads; a header that claims more (a damaged or hostile file) is refused before anything is decoded
MAX_IMAGE_PIXELS = 4096 * 4096


def load_image_folder(data_dir: str | None, split: str = "train") -> torch.Tensor:
    """Every PNG/JPEG under ``data_dir`` (sorted by path; all of one size and mode) as float32 (N, C, H, W) in
    [-1, 1]: C = 1 for grayscale files, else 3. ``split`` "train" is all images; a ``train``/``test`` subfolder,
    when present, is that split."""
    import numpy as np

    if data_dir is None:
        raise DatasetNotFoundError("the image-folder dataset needs --data-dir DIR holding PNG or JPEG files")
    root = Path(data_dir).expanduser()
    if (root / split).is_dir():
        root = root / split
    elif split != "train" and root.is_dir():
        raise DatasetNotFoundError(f"{root} has no {split}/ subfolder; without train/ and {split}/ subfolders every "
                                   f"image is the train split")
    if not root.is_dir():
        raise DatasetNotFoundError(f"--data-dir {root} is not a folder; expected a folder of PNG or JPEG images")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetNotFoundError(f"{root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    arrays = []
    for f in files:
        arr = _read_image(f)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if arrays and arr.shape != arrays[0].shape:
            raise ValueError(f"{f} is {arr.shape[0]}x{arr.shape[1]}x{arr.shape[2]} (C x H x W); the first image, "
                             f"{files[0].name}, is {'x'.join(map(str, arrays[0].shape))}: all images must match")
        arrays.append(arr)
    return dequantize(torch.from_numpy(np.stack(arrays)))


def _read_image(path: Path):
    """One image file as a uint8 array, (H, W) for grayscale files, else (H, W, 3). A file that is not a readable
    image of at most ``MAX_IMAGE_PIXELS`` pixels is a DatasetNotFoundError naming it, on one line."""
    import re
    import warnings

    import numpy as np
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DatasetNotFoundError(f"{path}: {width}x{height} pixels ({width * height}); images of at "
                                               f"most {MAX_IMAGE_PIXELS} pixels are read")
                gray = img.mode in ("L", "1", "I;16", "I")
                return np.asarray(img.convert("L" if gray else "RGB"))
    except DatasetNotFoundError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own limit, at open
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = claimed.group(1) if claimed else f"more than {Image.MAX_IMAGE_PIXELS}"
        raise DatasetNotFoundError(f"{path}: its header claims {pixels} pixels; images of at most "
                                   f"{MAX_IMAGE_PIXELS} pixels are read") from None
    except (OSError, SyntaxError, EOFError, ValueError) as exc:   # PIL: not an image, or damaged
        raise DatasetNotFoundError(f"{path}: {_not_an_image(path, exc)}") from None


def _not_an_image(path: Path, exc: BaseException) -> str:
    """Why ``path`` could not be read as an image: empty, a Git LFS pointer, or what PIL said."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "the file is empty (0 bytes), not an image"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the image itself: fetch the images with `git lfs pull`"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"not a readable PNG or JPEG image ({text})"


register_dataset(Dataset("folder", lambda split, data_dir: load_image_folder(data_dir, split),
                         description="every PNG/JPEG under --data-dir (train/ and test/ subfolders, when present)"))


@dataclass(frozen=True)
class ImageProblem:
    """pi0 = N(0, I) of the image shape, pi1 = the images of ``dataset`` (``train_split`` for training,
    ``reference_split`` for the metrics' reference). Evaluation x0 comes from seeds via :meth:`initial`."""

    dataset: str
    shape: tuple[int, int, int]
    train_split: str = "train"
    reference_split: str = "train"
    independent_split: str = "test"   # real images for the independent row: held out, not in the reference
    data_dir: str | None = None
    data_seed: int = 1234
    _fingerprints: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (split, files) -> SHA-1

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"ImageProblem.shape must be (C, H, W), got {self.shape}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown image dataset {self.dataset!r}; known: {', '.join(DATASETS.names())}")

    def _load(self, split: str) -> torch.Tensor:
        images = load_images(self.dataset, split, self.data_dir)
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"dataset {self.dataset} ({split}) has images of shape {tuple(images.shape[1:])}; "
                             f"the suite expects {self.shape}")
        return images

    def train_target(self) -> torch.Tensor:
        return self._load(self.train_split)

    def train_source(self) -> None:
        return None  # Gaussian noise, drawn fresh

    def reference(self, n: int | None = None) -> torch.Tensor:
        """All reference images (``n`` is ignored: image metrics compare with the whole reference set)."""
        return self._load(self.reference_split)

    def initial(self, seeds: Sequence[int]) -> torch.Tensor:
        return noise.initial(seeds, self.shape)

    def fingerprint(self, split: str, images: torch.Tensor | None = None) -> str:
        """:func:`image_fingerprint` of a split (``images``: the split, when already loaded). Every model's cache
        spec carries it and hashing MNIST's training set takes seconds, so it is remembered, keyed by the size and
        modification time of the data files: files changed on disk are hashed again."""
        key = (split, files_signature(self.dataset, self.data_dir))
        if key not in self._fingerprints:
            self._fingerprints[key] = image_fingerprint(self._load(split) if images is None else images)
        return self._fingerprints[key]

    def independent_target(self, seeds: Sequence[int]) -> torch.Tensor:
        """Held-out real images (``independent_split``), one per seed, without repeats: seed s gets image
        perm[s] of a fixed permutation (``data_seed``), so a seed always gets the same image at any sample count.
        Only the first ``len(split)`` seeds get one (the split has no more distinct images; repeated images would
        be their own nearest neighbours and corrupt precision, recall and KID): the caller pairs them with the
        first x0. The independent coupling, and the image metrics' reading for real images the models never saw."""
        data = self._load(self.independent_split)
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.data_seed))
        idx = [int(perm[s % len(data)]) for s in list(seeds)[:len(data)]]
        return data[idx]

    def to_dict(self) -> dict:
        return {"kind": "images", "dataset": self.dataset, "shape": list(self.shape), "train_split": self.train_split,
                "train_sha1": self.fingerprint(self.train_split), "data_seed": self.data_seed}

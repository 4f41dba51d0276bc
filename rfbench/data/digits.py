"""sklearn's bundled 8x8 digits (1,797 real images, offline), scaled to [-1, 1], with a fixed held-out split."""

from __future__ import annotations

import numpy as np
import torch

from rfbench.data.registry import Dataset, register_dataset

SPLIT_SEED = 0
NUM_HELD_OUT = 360  # 20 % of 1,797


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 8, 8) float32 in [-1, 1] and labels (N,) for ``split`` "train" (1,437), "test" (360) or
    "all" (1,797). The split is a fixed permutation (seed 0), the same on every machine."""
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    data = sklearn_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # 0..16 -> [-1, 1]
    labels = torch.from_numpy(data.target.astype(np.int64))
    if split == "all":
        return images, labels
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(labels)))
    idx = order[NUM_HELD_OUT:] if split == "train" else order[:NUM_HELD_OUT]
    return images[idx], labels[idx]


register_dataset(Dataset("digits", lambda split, data_dir: load_digits(split)[0], splits=("train", "test", "all"),
                         bundled=True, description="sklearn's bundled 8x8 digits, 1,437 train / 360 test"))

"""Feature sets shaped like Inception's, and prdc's answer on them, for the precision/recall tests and benchmarks."""

from __future__ import annotations

import numpy as np


def inception_like(n: int, seed: int, weights) -> np.ndarray:
    """(n, 2048) float32 features shaped like Inception's pool3 (non-negative, clustered): 10 modes, Gaussian noise,
    ReLU. ``weights``: the modes' probabilities (the fake set skews them)."""
    centers = np.random.default_rng(99).gamma(2.0, 0.2, size=(10, 2048)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.choice(10, n, p=weights)
    return np.maximum(centers[labels] + 0.25 * rng.standard_normal((n, 2048), dtype=np.float32), 0)


def prdc_precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """prdc's precision and recall (NAVER's reference implementation), its printing silenced."""
    import contextlib
    import io

    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):    # prdc prints the set sizes
        out = compute_prdc(real, fake, k)
    return float(out["precision"]), float(out["recall"])

"""Image-quality metrics on features: FID (Frechet distance), KID, precision/recall and Inception Score.

Plain arrays or tensors in, floats out; float64 throughout. Features come from an extractor (Inception-v3 for
FID/IS in the literature); these functions know nothing of extractors, images or samplers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rfbench.data.base import object_arrays_problem
from rfbench.device import resolve_device
from rfbench.files import atomic_write
from rfbench.metrics import knn


def _as_features(x, name: str) -> np.ndarray:
    """(N, D) float64 array; non-finite rows are an error that says how many."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, D), got {a.shape}")
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} of {a.shape[0]} rows with NaN or inf features")
    return a


# -- Gaussian statistics --------------------------------------------------------------------------------------------

@dataclass
class GaussianStats:
    """Mean (D,) and covariance (D, D) of a feature set, float64, from ``n`` samples.

    A factor R of ``sigma`` (sigma = R R^T: Cholesky, or the symmetric square root when sigma is singular) is
    computed once and kept, so a reference set pays for it once however many models are compared with it.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    _factor: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"GaussianStats needs mu (D,) and sigma (D, D); got {self.mu.shape} and "
                             f"{self.sigma.shape}")
        if not (np.isfinite(self.mu).all() and np.isfinite(self.sigma).all()):
            raise ValueError("GaussianStats: mu or sigma contains NaN or inf")

    @classmethod
    def from_features(cls, features) -> "GaussianStats":
        acc = StatsAccumulator()
        acc.update(features)
        return acc.stats()

    @property
    def factor(self) -> np.ndarray:
        """R with sigma = R R^T (cached)."""
        if self._factor is None:
            self._factor = _psd_factor(self.sigma)
        return self._factor

    def save(self, path: str | os.PathLike, **meta: str) -> None:
        """Write an ``.npz`` with mu, sigma, n and string metadata (atomically: :func:`rfbench.files.atomic_write`)."""
        atomic_write(path, lambda fh: np.savez(fh, mu=self.mu, sigma=self.sigma, n=np.int64(self.n),
                                               **{f"meta_{k}": np.str_(v) for k, v in meta.items()}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GaussianStats":
        """Read statistics from an ``.npz`` with ``mu`` and ``sigma`` (rfbench's, clean-fid's or score_sde's)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics not found: {path}")
        if (problem := object_arrays_problem(path)) is not None:
            raise ValueError(problem)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("mu", "sigma") if k not in data]
                if missing:
                    raise ValueError(f"{path} has no {' or '.join(missing)} array (found: {', '.join(data.files)})")
                return cls(data["mu"], data["sigma"], int(data["n"]) if "n" in data else -1)
        except (OSError, EOFError) as exc:
            raise ValueError(f"cannot read reference statistics {path}: {exc}") from None


class StatsAccumulator:
    """Streams features into sums of x and x x^T (float64), so memory does not grow with the sample count.

    The covariance is the unbiased estimate (divide by n - 1), as numpy's ``np.cov`` and clean-fid compute it.
    Sums are centred on the first batch's mean to keep the float64 sums well conditioned.
    """

    def __init__(self):
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features) -> None:
        x = _as_features(features, "features")
        if self._shift is None:
            self._shift = x.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"features have {x.shape[1]} dimensions, earlier batches had {self._shift.shape[0]}")
        xc = x - self._shift
        self._sum += xc.sum(axis=0)
        self._outer += xc.T @ xc
        self.n += x.shape[0]

    def stats(self) -> GaussianStats:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature rows for a covariance, got {self.n}")
        mean_c = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mean_c, mean_c)) / (self.n - 1)
        return GaussianStats(self._shift + mean_c, (sigma + sigma.T) / 2, self.n)


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    """R with sigma = R R^T for a symmetric PSD matrix: the Cholesky factor when sigma is positive definite (a
    tenth of the cost of an eigendecomposition), else the symmetric square root with round-off eigenvalues
    below zero clipped (singular covariances, e.g. fewer samples than dimensions)."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(sigma)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# -- FID ---------------------------------------------------------------------------------------------------------

def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
        ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    tr((sigma1 sigma2)^(1/2)) is the sum of square roots of the eigenvalues of sigma1 sigma2, which are those of
    the symmetric PSD matrix R^T sigma1 R for any factor sigma2 = R R^T. This is exact, needs no complex
    arithmetic and, unlike ``scipy.linalg.sqrtm``, no regularisation for singular covariances. Equal to
    clean-fid's value to 1e-6 relative, and faster on 2048-d statistics (ratios in tests/test_benchmarks.py);
    pass GaussianStats to :func:`frechet_distance_stats` to reuse the reference's factor.
    """
    return frechet_distance_stats(GaussianStats(mu1, sigma1, -1), GaussianStats(mu2, sigma2, -1))


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    """Frechet distance between two GaussianStats; b's factor is cached on b (use b for the reference)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"statistics of different dimension: {a.mu.shape[0]} and {b.mu.shape[0]}")
    r = b.factor
    eig = np.linalg.eigvalsh(r.T @ a.sigma @ r)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = a.mu - b.mu
    value = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * tr_covmean
    return float(max(value, 0.0))


def bootstrap_se(statistic, rows: np.ndarray, replicates: int, seed: int = 0) -> float:
    """Bootstrap standard error of ``statistic(rows)``: the standard deviation (ddof=1) of the statistic over
    ``replicates`` resamples of the rows with replacement (seeded, so a run's numbers repeat). The reference set
    is held fixed: this is the sampling error of the generated samples only."""
    if replicates < 2:
        raise ValueError(f"bootstrap needs at least 2 replicates, got {replicates}")
    rng = np.random.default_rng(seed)
    n = len(rows)
    values = [statistic(rows[rng.integers(0, n, n)]) for _ in range(replicates)]
    return float(np.std(values, ddof=1))


def half_sample_values(statistic, rows: np.ndarray, replicates: int, seed: int = 0) -> np.ndarray:
    """``statistic`` on ``replicates`` random halves of the rows drawn without replacement (seeded); their standard
    deviation (ddof=1) is the half-sampling standard error of ``statistic(rows)``. This is the delete-d jackknife
    with d = N/2 (Shao and Wu 1989), whose variance factor (N - d) / d is then 1; unlike the bootstrap it never
    repeats a row, so it suits statistics built on nearest neighbours (a repeated row is its own neighbour at
    distance 0), and it stays consistent for non-smooth statistics such as coverage fractions."""
    if replicates < 2:
        raise ValueError(f"half-sampling needs at least 2 replicates, got {replicates}")
    rng = np.random.default_rng(seed)
    n = len(rows)
    return np.array([statistic(rows[np.sort(rng.choice(n, n // 2, replace=False))]) for _ in range(replicates)])


def fid(features_a, features_b) -> float:
    """FID between two feature sets (N, D) and (M, D): the Frechet distance of their Gaussian statistics."""
    return frechet_distance_stats(GaussianStats.from_features(features_a), GaussianStats.from_features(features_b))


# -- KID ---------------------------------------------------------------------------------------------------------

def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0, *,
        full_kernel_rows: int | None = None) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / D + 1)^3, averaged over ``num_subsets`` random subsets of ``min(subset_size, N, M)`` rows
    from each set (drawn without replacement, seeded). ``full_kernel_rows``: as in :func:`kid_with_se`."""
    return kid_with_se(features_a, features_b, num_subsets, subset_size, seed, with_se=False,
                       full_kernel_rows=full_kernel_rows)[0]


def kid_with_se(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                with_se: bool = True, *, full_kernel_rows: int | None = None,
                max_bytes: int = 256 * 2**20) -> tuple[float, float | None]:
    """:func:`kid` of samples ``features_a`` against a fixed reference ``features_b``, and its standard error.

    The subset average estimates the full-set unbiased MMD^2 U-statistic U; its variance over the samples is
    Var(U) + the subsets' own noise. Var(U) is the delete-one jackknife of U over the sample rows, in closed form
    from the kernel row sums (O(N (N + M) D), no resampling); the subsets' noise is their variance / num_subsets.
    The standard error is None with fewer than 3 sample rows.

    How it is computed, not what (the same subsets and sums either way, equal up to rounding): with at most
    ``full_kernel_rows`` rows in each set (default :data:`KID_FULL_KERNEL_ROWS`) the full kernel matrices are
    built once; above it each subset's kernels are built in turn and the row sums in blocks of rows whose float64
    kernel block stays within ``max_bytes``."""
    full_kernel_rows = KID_FULL_KERNEL_ROWS if full_kernel_rows is None else full_kernel_rows
    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"kid needs at least 2 rows in each set, got {a.shape[0]} and {b.shape[0]}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    subsets = [(rng.choice(a.shape[0], m, replace=False), rng.choice(b.shape[0], m, replace=False))
               for _ in range(num_subsets)]
    if max(a.shape[0], b.shape[0]) <= full_kernel_rows:
        kaa, kbb, kab = _kernel(a, a, d), _kernel(b, b, d), _kernel(a, b, d)
        values = _kid_from_full_kernels(kaa, kbb, kab, subsets, m)
        sums = (kaa.sum(1) - np.diag(kaa), kab.sum(1)) if with_se else None
    else:
        values = np.array([_kid_subset(a[ia], b[ib], d) for ia, ib in subsets])
        sums = _kernel_row_sums(a, b, d, max_bytes) if with_se else None
    value = float(values.mean())
    if sums is None or a.shape[0] < 3:
        return value, None
    n, within, across = a.shape[0], sums[0], sums[1]
    # U without row i moves by g_i - mean(g) (the other terms do not depend on i); the jackknife variance is
    # (n - 1) / n * sum (g_i - mean g)^2
    g = 2.0 * (across / b.shape[0] - within / (n - 2)) / (n - 1)
    var_u = (n - 1) / n * float(((g - g.mean()) ** 2).sum())
    var_subsets = float(values.var(ddof=1)) / num_subsets if num_subsets > 1 else 0.0
    return value, math.sqrt(var_u + var_subsets)


def _kernel(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    return (x @ y.T / d + 1) ** 3


def _kid_subset(x: np.ndarray, y: np.ndarray, d: int) -> float:
    m = x.shape[0]
    kxx, kyy, kxy = _kernel(x, x, d), _kernel(y, y, d), _kernel(x, y, d)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()


def _kernel_row_sums(a: np.ndarray, b: np.ndarray, d: int, max_bytes: int,
                     device: str | torch.device | None = None) -> tuple[np.ndarray, ...]:
    """Per row of ``a``: the kernel summed over the other rows of ``a``, and over the rows of ``b``, in row blocks
    (never the full N x N matrix), float64 on ``device`` (default CUDA when available: 50,000 x 50,000 x 2048-d
    is about 2e13 flops)."""
    device = resolve_device(device)
    at, bt = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
    rows = _block_rows(max(a.shape[0], b.shape[0]), max_bytes, 8)
    within, across = [], []
    for start in range(0, a.shape[0], rows):
        blk = at[start:start + rows]
        within.append(((blk @ at.T / d + 1) ** 3).sum(1) - ((blk * blk).sum(1) / d + 1) ** 3)
        across.append(((blk @ bt.T / d + 1) ** 3).sum(1))
    return torch.cat(within).cpu().numpy(), torch.cat(across).cpu().numpy()


def _block_rows(n_cols: int, max_bytes: int, itemsize: int) -> int:
    return max(1, min(n_cols, max_bytes // (itemsize * max(n_cols, 1))))


# Up to this many rows per set, kid() builds the full kernel matrices once (at most 8 * 5000^2 B = 200 MB each)
# and sums each subset's blocks as w^T K w with indicator vectors w: the same subsets and the same sums as the
# per-subset loop, 50x faster for 100 subsets of 1000 (7.5 s -> 0.15 s at 1000 x 1437 rows, 128-d, 2 cores).
KID_FULL_KERNEL_ROWS = 5000


def _kid_from_full_kernels(kaa: np.ndarray, kbb: np.ndarray, kab: np.ndarray, subsets, m: int) -> np.ndarray:
    """Each subset's unbiased MMD^2, from the full kernel matrices."""
    wa = np.zeros((kaa.shape[0], len(subsets)))
    wb = np.zeros((kbb.shape[0], len(subsets)))
    for j, (ia, ib) in enumerate(subsets):
        wa[ia, j] = 1.0
        wb[ib, j] = 1.0
    within_a = np.einsum("is,is->s", wa, kaa @ wa) - wa.T @ np.diag(kaa)       # off-diagonal sums per subset
    within_b = np.einsum("is,is->s", wb, kbb @ wb) - wb.T @ np.diag(kbb)
    across = np.einsum("is,is->s", wa, kab @ wb)
    return (within_a + within_b) / (m * (m - 1)) - 2 * across / (m * m)


# -- precision and recall (the k-NN work: rfbench/metrics/knn.py) ----------------------------------------------------

def _feature_tensor(x, name: str) -> torch.Tensor:
    """(N, D) tensor, float32 kept as float32 (no float64 copy of 50,000 x 2,048 features), anything else as
    float64; non-finite rows are an error that says how many."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2 or t.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float64)
    bad = sum(int((~torch.isfinite(t[i:i + 1024]).all(1)).sum()) for i in range(0, t.shape[0], 1024))
    if bad:
        raise ValueError(f"{name} has {bad} of {t.shape[0]} rows with NaN or inf features")
    return t


def _check_k(k: int, n: int, what: str) -> None:
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {what}, got {k}")


def knn_radii(features, k: int = 3, *, device: str | torch.device | None = None,
              max_block_bytes: int = 128 * 2**20, world=None) -> torch.Tensor:
    """Exact squared distance (float64, on the CPU) from each row of ``features`` (N, D) to its k-th nearest other
    row, as :func:`precision_recall` uses for the real manifold: compute it once for a reference set and pass it as
    ``real_radii`` to every cell (for 60,000 reference rows it is most of the metric's cost). ``world``: split the
    rows over the processes of a torchrun (each must pass the same features)."""
    x = _feature_tensor(features, "features")
    _check_k(k, x.shape[0], f"{x.shape[0]} rows")
    with knn.full_float32_products():
        return knn.knn_radii_exact(knn.Features(x, resolve_device(device)), k, max_block_bytes, world).cpu()


def _prepared(real_features, fake_features, real_radii, device):
    real = _feature_tensor(real_features, "real_features")
    fake = _feature_tensor(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} and {fake.shape[1]}")
    if real_radii is not None and tuple(real_radii.shape) != (real.shape[0],):
        raise ValueError(f"real_radii must have one radius per real row, shape ({real.shape[0]},); got "
                         f"{tuple(real_radii.shape)}")
    device = resolve_device(device)
    return knn.Features(real, device), knn.Features(fake, device), device


def precision_recall(real_features, fake_features, k: int = 3, *, device: str | torch.device | None = None,
                     max_block_bytes: int = 128 * 2**20, real_radii: torch.Tensor | None = None,
                     world=None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-nearest-neighbour manifolds.

    precision: the fraction of fake samples inside the real manifold (within the k-NN radius of some real
    sample); recall: the fraction of real samples inside the fake manifold. ``real_features`` (N, D) and
    ``fake_features`` (M, D), float32 or float64. The answer is that of exact float64 distances, computed as float32
    products in row blocks of at most ``max_block_bytes`` with an exact re-check wherever rounding could flip a
    comparison (:mod:`rfbench.metrics.knn`), on ``device`` (default: CUDA when available, else CPU).
    ``real_radii``: :func:`knn_radii` of ``real_features`` with the same ``k``, when already computed.
    ``world``: split the work over the processes of a torchrun; each passes the same features and gets the answer.
    """
    _check_k(k, min(len(real_features), len(fake_features)),
             f"sets of {len(real_features)} and {len(fake_features)} rows")
    real, fake, device = _prepared(real_features, fake_features, real_radii, device)
    with knn.full_float32_products():
        r_real = knn.radii(real, k, max_block_bytes, world, exact=real_radii)
        r_fake = knn.radii(fake, k, max_block_bytes, world)
        return knn.coverages(fake, real, r_fake, r_real, max_block_bytes, world)


def recall_se(real_features, fake_features, k: int = 3, replicates: int = 100, seed: int = 0, *,
              device: str | torch.device | None = None, max_block_bytes: int = 128 * 2**20,
              real_radii: torch.Tensor | None = None, world=None) -> float | None:
    """Standard error of :func:`precision_recall`'s recall over the fake samples, the real set fixed: the
    half-sampling estimate (:func:`half_sample_values`), each half with its own k-NN radii. Recall's per-real indicators
    share the fake set, so there is no closed form; a bootstrap would repeat fake rows, and a repeated row is its
    own nearest neighbour, which shrinks the radii. Against the spread of recall over 100 independent fake sets
    (400 x 8-d Gaussians, recall 0.54 and 0.93) its mean came within 7% (tests/test_intervals.py, which allows 25%).
    None when every half gives the same recall (typically 0 or 1): no spread is resolved, and 0 would claim
    certainty. ``world``: each half's work split over the processes of a torchrun."""
    n_fake = len(fake_features)
    if not 1 <= k < n_fake // 2:
        raise ValueError(f"recall_se: k must be in [1, {n_fake // 2 - 1}] for halves of {n_fake} "
                         f"fake rows, got {k}")
    real, fake, device = _prepared(real_features, fake_features, real_radii, device)
    with knn.full_float32_products():
        r_real = knn.radii(real, k, max_block_bytes, world, exact=real_radii)

        def recall(rows: np.ndarray) -> float:
            half = knn.Features(fake.exact[torch.as_tensor(rows)], device)
            r_half = knn.radii(half, k, max_block_bytes, world)
            return knn.coverages(half, real, r_half, r_real, max_block_bytes, world)[1]

        values = half_sample_values(recall, np.arange(n_fake), replicates, seed)
    return None if values.min() == values.max() else float(np.std(values, ddof=1))


# -- Inception Score ----------------------------------------------------------------------------------------------

def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), computed on ``splits`` consecutive
    chunks of the samples; returns the mean and standard deviation over chunks (std 0 for splits=1, which is what
    the rectified-flow paper reports). ``logits`` are the classifier's pre-softmax outputs, shape (N, classes)."""
    z = _as_features(logits, "logits")
    if not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits must be in [1, {z.shape[0]}] for {z.shape[0]} samples, got {splits}")
    log_p = z - z.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log softmax, float64
    scores = []
    for chunk in np.array_split(log_p, splits):
        log_py = np.log(np.exp(chunk).mean(axis=0))
        kl = (np.exp(chunk) * (chunk - log_py)).sum(axis=1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))

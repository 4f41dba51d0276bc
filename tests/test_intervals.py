"""Standard errors of every metric against the truth they estimate: the spread of the metric over many independent
sample sets (the reference held fixed), drawn from known distributions. Seeded, so each check is one fixed number;
the tolerance (25%) is about 2.5 times the Monte Carlo error of a standard deviation from 60-100 sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rfbench.metrics import (METRICS, MetricInput, interval_methods, kid_with_se, knn_radii,
                             precision_recall, recall_se, straightness, w2_with_se)
from rfbench.metrics.image import half_sample_values


def _eight_gaussians(n: int, rng: np.random.Generator, radius: float = 4.0, sd: float = 0.3,
                     shift: float = 0.0) -> np.ndarray:
    angle = rng.integers(0, 8, n) * np.pi / 4
    return np.c_[np.cos(angle), np.sin(angle)] * radius + sd * rng.standard_normal((n, 2)) + shift


@pytest.mark.parametrize("radius, sd, shift", [(3.8, 0.45, 0.1), (4.0, 0.3, 0.0)], ids=["wrong", "perfect"])
def test_w2_standard_error_matches_the_spread_over_independent_sample_sets(radius, sd, shift):
    n = 300
    reference = _eight_gaussians(n, np.random.default_rng(123))
    rng = np.random.default_rng(0)
    values, errors = zip(*(w2_with_se(_eight_gaussians(n, rng, radius, sd, shift), reference) for _ in range(60)))
    assert np.mean(errors) == pytest.approx(np.std(values, ddof=1), rel=0.25)
    assert w2_with_se(reference, reference) == (0.0, None)          # no spread to speak of at distance 0


def test_kid_jackknife_is_the_delete_one_jackknife_and_matches_the_spread():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 0.4
    value, se = kid_with_se(a, b, num_subsets=1, subset_size=1000)   # one subset = the full sets

    def kernel(x, y):   # KID's cubic polynomial kernel, (x.y / D + 1)^3
        return (x @ y.T / x.shape[1] + 1) ** 3

    def u(x):   # the unbiased MMD^2 of x against b, written out
        kxx, kxy, kyy = kernel(x, x), kernel(x, b), kernel(b, b)
        m, k = len(x), len(b)
        return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (k * (k - 1))
                - 2 * kxy.mean())

    assert value == pytest.approx(u(a), rel=1e-12)
    leave_one_out = np.array([u(np.delete(a, i, axis=0)) for i in range(len(a))])
    jackknife = math.sqrt((len(a) - 1) / len(a) * ((leave_one_out - leave_one_out.mean()) ** 2).sum())
    assert se == pytest.approx(jackknife, rel=1e-9)
    # against the spread of KID (100 subsets of 150 from 200 rows) over 100 independent sample sets
    reference = rng.normal(size=(300, 8))
    draws = [kid_with_se(rng.normal(size=(200, 8)) * 1.2 + 0.1, reference, subset_size=150) for _ in range(100)]
    values, errors = zip(*draws)
    assert np.mean(errors) == pytest.approx(np.std(values, ddof=1), rel=0.25)
    assert kid_with_se(a, b, with_se=False)[1] is None


def test_kid_standard_error_by_row_blocks_equals_the_full_kernel_route():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(120, 5)), rng.normal(size=(90, 5)) + 0.2
    full = kid_with_se(a, b, num_subsets=10, subset_size=60, seed=4)
    # the per-subset loop, and row sums in blocks of 7 rows (7 float64 rows of 120 columns in 6,720 bytes)
    blocked = kid_with_se(a, b, num_subsets=10, subset_size=60, seed=4, full_kernel_rows=0, max_bytes=7 * 8 * 120)
    np.testing.assert_allclose(blocked, full, rtol=1e-10)


@pytest.mark.parametrize("scale, shift", [(1.15, 0.2), (0.8, 0.5)], ids=["high-recall", "low-recall"])
def test_recall_half_sampling_matches_the_spread_over_independent_sample_sets(scale, shift):
    n, d = 400, 8
    rng = np.random.default_rng(3)
    real = rng.standard_normal((n, d))
    radii = knn_radii(real, 3, device="cpu")
    recalls = [precision_recall(real, scale * rng.standard_normal((n, d)) + shift, 3, device="cpu",
                                real_radii=radii)[1] for _ in range(100)]
    errors = [recall_se(real, scale * rng.standard_normal((n, d)) + shift, 3, replicates=60, device="cpu",
                        real_radii=radii) for _ in range(4)]
    assert np.mean(errors) == pytest.approx(np.std(recalls, ddof=1), rel=0.25)
    far = real + 100.0                          # no real point near any fake: recall 0 in every half, no spread
    assert precision_recall(real, far, 3, device="cpu", real_radii=radii)[1] == 0.0
    assert recall_se(real, far, 3, replicates=5, device="cpu", real_radii=radii) is None
    with pytest.raises(ValueError, match=r"recall_se: k must be in \[1, 2\] for halves of 6 fake rows, got 3"):
        recall_se(real, real[:6], 3, device="cpu")


def test_half_sampling_of_a_mean_is_its_standard_error():
    x = np.random.default_rng(4).normal(size=(1000, 1))
    se = np.std(half_sample_values(lambda rows: rows.mean(), x, replicates=400), ddof=1)
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(1000), rel=0.15)
    with pytest.raises(ValueError, match="at least 2 replicates"):
        half_sample_values(np.mean, x, 1)


def test_straightness_standard_error_is_that_of_the_per_path_integrals():
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    states = torch.randn(5, 30, 2, generator=gen, dtype=torch.float64)
    velocities = torch.randn(4, 30, 2, generator=gen, dtype=torch.float64)
    value, se = straightness(times, states, velocities, with_se=True)
    per_path = sum(0.25 * ((states[-1] - states[0] - velocities[k]) ** 2).sum(1) for k in range(4))
    assert value == pytest.approx(per_path.mean().item(), rel=1e-12)
    assert value == pytest.approx(straightness(times, states, velocities), rel=1e-12)
    assert se == pytest.approx(per_path.std().item() / math.sqrt(30), rel=1e-12)


def test_every_standard_error_says_how_it_is_estimated_and_resampled_ones_wait_to_be_asked():
    columns = {col for _, metric in METRICS.items() for col in metric.columns}
    se_columns = {col for col in columns if col.endswith("_se")}
    assert se_columns == set(interval_methods())
    assert {"w2_se", "kid_se", "recall_se", "straightness_se", "fid_se", "is_se"} <= se_columns
    resampled = {col for col, method in interval_methods().items() if "only when" in method}
    assert resampled == {"fid_se", "is_se", "kid_se", "recall_se"}          # the ones that cost replicates
    rng = np.random.default_rng(6)
    feats = torch.from_numpy(rng.normal(size=(60, 4)))
    ref = torch.from_numpy(rng.normal(size=(80, 4)))
    inputs = dict(z0=feats, z1=feats, features=feats, reference_features=ref)
    assert METRICS["kid"](MetricInput(**inputs))["kid_se"] is None
    assert METRICS["kid"](MetricInput(**inputs, bootstrap=10))["kid_se"] > 0
    assert METRICS["precision_recall"](MetricInput(**inputs))["recall_se"] is None
    assert METRICS["precision_recall"](MetricInput(**inputs, bootstrap=10))["recall_se"] > 0
    two_d = torch.from_numpy(rng.normal(size=(50, 2)))
    out = METRICS["w2"](MetricInput(z0=two_d, z1=two_d, reference=two_d.flip(0) * 2.0))
    assert (out["w2"], out["w2_se"]) == w2_with_se(two_d, two_d.flip(0) * 2.0) and out["w2_se"] > 0

"""FID, KID, precision/recall and IS against clean-fid, direct implementations and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from cleanfid.fid import kernel_distance as cleanfid_kernel_distance

from rfbench.metrics.image import (GaussianStats, StatsAccumulator, fid, frechet_distance, frechet_distance_stats,
                                   inception_score, kid, knn_radii, precision_recall)


def _features(n, d, seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / math.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix) * scale + shift


@pytest.mark.parametrize("d", [8, 64, 256])
def test_frechet_distance_equals_clean_fid(d):
    a, b = _features(3 * d, d, 0), _features(4 * d, d, 1, scale=1.3, shift=0.2)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(cleanfid_frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))  # the same rotation of both keeps them commuting
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fid_of_a_set_with_itself_is_zero_and_singular_covariances_work():
    x = _features(500, 32, 4)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    few = _features(10, 32, 5)  # fewer rows than dimensions: a singular covariance, no regularisation needed
    assert fid(few, few) == pytest.approx(0.0, abs=1e-6)
    assert fid(few, x) > 0


def test_streamed_statistics_equal_numpy_and_ignore_batching():
    x = _features(1000, 16, 6, shift=100.0)  # a large mean tests the conditioning of the streamed sums
    acc = StatsAccumulator()
    for start in range(0, 1000, 137):
        acc.update(torch.as_tensor(x[start:start + 137]))  # tensors or arrays
    stats = acc.stats()
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.n == 1000
    with pytest.raises(ValueError, match="features have 8 dimensions, earlier batches had 16"):
        acc.update(np.zeros((2, 8)))


def test_statistics_round_trip_and_foreign_files(tmp_path):
    stats = GaussianStats.from_features(_features(100, 8, 7))
    stats.save(tmp_path / "ref.npz", dataset="digits", extractor="test")
    back = GaussianStats.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(back.mu, stats.mu) and np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.n == 100
    np.savez(tmp_path / "cleanfid_style.npz", mu=stats.mu, sigma=stats.sigma)  # clean-fid stores only these
    assert GaussianStats.load(tmp_path / "cleanfid_style.npz").n == -1
    np.savez(tmp_path / "wrong.npz", mean=stats.mu)
    with pytest.raises(ValueError, match="has no mu or sigma array \\(found: mean\\)"):
        GaussianStats.load(tmp_path / "wrong.npz")
    with pytest.raises(FileNotFoundError, match="reference statistics not found"):
        GaussianStats.load(tmp_path / "missing.npz")


def test_cached_reference_root_gives_the_same_distance():
    ref = GaussianStats.from_features(_features(400, 32, 8))
    gen = GaussianStats.from_features(_features(400, 32, 9, scale=1.2))
    first = frechet_distance_stats(gen, ref)
    assert ref._factor is not None
    assert frechet_distance_stats(gen, ref) == first


def test_kid_equals_clean_fid_on_full_sets_and_is_seeded():
    a, b = _features(300, 16, 10), _features(300, 16, 11, shift=0.3)  # full sets: no subset randomness
    ours = kid(a, b, num_subsets=1, subset_size=10_000)
    assert ours == pytest.approx(cleanfid_kernel_distance(a, b, num_subsets=1, max_subset_size=10_000), rel=1e-9)
    assert kid(a, b, num_subsets=5, subset_size=100, seed=1) == kid(a, b, num_subsets=5, subset_size=100, seed=1)
    both = _features(600, 16, 10)  # two independent halves of one distribution: KID is zero up to noise
    same = kid(both[:300], both[300:], num_subsets=1, subset_size=10_000)
    assert ours > 10 * abs(same)


def test_kid_full_kernel_route_equals_the_per_subset_loop():
    a, b = _features(500, 24, 3), _features(700, 24, 4, shift=0.2)
    fast = kid(a, b, num_subsets=20, subset_size=200, seed=5)
    loop = kid(a, b, num_subsets=20, subset_size=200, seed=5, full_kernel_rows=0)     # the loop over subsets
    assert fast == pytest.approx(loop, rel=1e-10, abs=1e-12)


def _direct_precision_recall(real, fake, k):
    """The definition with full distance matrices (numpy, float64)."""
    def radii(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    def coverage(q, s, r):
        d = ((q[:, None, :] - s[None, :, :]) ** 2).sum(-1)
        return float((d <= r[None, :]).any(axis=1).mean())

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def test_precision_recall_equals_the_full_matrix_definition_at_any_block_size():
    real, fake = _features(300, 8, 12), _features(200, 8, 13, scale=1.5, shift=0.5)
    expected = _direct_precision_recall(real, fake, 3)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    for block in (512 * 2**20, 8 * 300 * 7, 1):  # one block, blocks of 7 rows, one row at a time
        assert precision_recall(real, fake, k=3, max_block_bytes=block, device="cpu") == expected
    assert precision_recall(real, fake, k=5, device="cpu") == _direct_precision_recall(real, fake, 5)
    # the reference radii computed once and passed in: the same numbers; a wrong length is an error
    radii = knn_radii(real, 3, device="cpu")
    np.testing.assert_allclose(radii.numpy(), np.sort(((real[:, None] - real[None]) ** 2).sum(-1), axis=1)[:, 3],
                               rtol=1e-12, atol=1e-12)
    assert precision_recall(real, fake, k=3, device="cpu", real_radii=radii) == expected
    with pytest.raises(ValueError, match=r"real_radii must have one radius per real row, shape \(300,\); got \(299,\)"):
        precision_recall(real, fake, k=3, device="cpu", real_radii=radii[:-1])


def _large_offset_sets(dtype):
    """Features far from the origin and close to each other (norms about 1e4 times the distances): float32
    products alone get most distances wrong here, so every answer rests on the exact re-checks. Rounded to
    multiples of 1/8 with duplicates: exact ties between distances and radii, which a flip of rounding would break."""
    rng = np.random.default_rng(21)
    real = np.round(8 * rng.standard_normal((240, 16))) / 8
    fake = np.round(8 * (1.2 * rng.standard_normal((200, 16)) + 0.1)) / 8
    fake[:40] = real[:40]                       # shared points
    real[100:110] = real[110:120]               # duplicates within a set
    return (real + 300.0).astype(dtype), (fake + 300.0).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_precision_recall_is_exact_where_float32_products_are_not(dtype):
    from rfbench.metrics import knn

    real, fake = _large_offset_sets(dtype)
    real_copy, fake_copy = real.copy(), fake.copy()
    r64, f64 = real.astype(np.float64), fake.astype(np.float64)
    expected = _direct_precision_recall(r64, f64, 3)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    for block in (128 * 2**20, 4 * 240 * 6 * 5):    # one block, blocks of 5 rows
        assert precision_recall(real, fake, k=3, max_block_bytes=block, device="cpu") == expected
    np.testing.assert_allclose(knn_radii(real, 3, device="cpu").numpy(),
                               np.sort(((r64[:, None] - r64[None]) ** 2).sum(-1), axis=1)[:, 3], rtol=1e-13)
    np.testing.assert_array_equal(real, real_copy)  # the inputs are left as they were
    np.testing.assert_array_equal(fake, fake_copy)
    # the float32 distances really are wrong here, and within the bound the module relies on
    x = torch.from_numpy(real.astype(np.float32))
    approx = (x * x).sum(1, keepdim=True) + (x * x).sum(1) - 2 * x @ x.T
    exact = torch.from_numpy(((r64[:, None] - r64[None]) ** 2).sum(-1))
    norms = torch.from_numpy((r64 ** 2).sum(1))
    error = (approx.double() - exact).abs()
    assert error.max() > 0.1 * exact[exact > 0].min()
    assert (error <= knn.error_coefficient(16, dtype == np.float32) * (norms[:, None] + norms[None])).all()


def test_precision_recall_agrees_with_a_float64_full_matrix_on_inception_sized_features():
    from tests.feature_sets import inception_like

    real = inception_like(400, 1, np.full(10, 0.1))
    fake = inception_like(300, 2, np.r_[np.full(5, 0.15), np.full(5, 0.05)])
    r64, f64 = real.astype(np.float64), fake.astype(np.float64)

    def sq(a, b):
        return (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T

    r_real, r_fake = np.sort(sq(r64, r64), 1)[:, 3], np.sort(sq(f64, f64), 1)[:, 3]
    d = sq(f64, r64)
    expected = float((d <= r_real[None]).any(1).mean()), float((d <= r_fake[:, None]).any(0).mean())
    assert 0.2 < expected[0] < 0.95 and 0.2 < expected[1] < 0.95
    assert precision_recall(real, fake, k=3, device="cpu", max_block_bytes=2**20) == expected


def test_precision_recall_of_a_set_against_itself_is_one():
    x = _features(200, 8, 14)
    assert precision_recall(x, x, device="cpu") == (1.0, 1.0)


def test_inception_score_closed_forms():
    classes = 10
    confident = np.full((1000, classes), -50.0)
    confident[np.arange(1000), np.arange(1000) % classes] = 50.0  # sure of each class, all classes equally often
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(np.zeros((100, classes)), splits=1) == (pytest.approx(1.0), 0.0)  # uniform: IS = 1
    assert inception_score(confident, splits=1)[1] == 0.0


def test_non_finite_features_name_the_bad_rows():
    x = _features(50, 4, 15)
    x[[3, 7]] = np.nan
    for call in (lambda: fid(x, x), lambda: kid(x, x), lambda: precision_recall(x, x, device="cpu"),
                 lambda: inception_score(x)):
        with pytest.raises(ValueError, match="2 of 50 rows with NaN or inf"):
            call()


def test_reference_statistics_are_computed_once_and_keyed(tmp_path):
    from rfbench.metrics.reference import ReferenceKey, reference_stats

    x = _features(300, 8, 16)
    calls = []

    def batches():
        calls.append(1)
        return (x[i:i + 64] for i in range(0, 300, 64))

    key = ReferenceKey("digits", "train", "digits-cnn", "none", 8)
    first, path = reference_stats(key, tmp_path, batches)
    again, _ = reference_stats(key, tmp_path, batches)
    assert len(calls) == 1 and path.name == "digits_train_digits-cnn_none_8.npz"
    np.testing.assert_allclose(first.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    other, other_path = reference_stats(ReferenceKey("digits", "train", "digits-cnn", "clean", 8), tmp_path, batches)
    assert other_path != path and len(calls) == 2               # the resize mode is part of the identity
    with pytest.raises(ValueError, match="must be a plain name"):
        ReferenceKey("../etc", "train", "x", "clean", 8)
    path.rename(tmp_path / "reference" / "digits_test_digits-cnn_none_8.npz")  # a file under the wrong name
    with pytest.raises(ValueError, match="holds statistics for"):
        reference_stats(ReferenceKey("digits", "test", "digits-cnn", "none", 8), tmp_path, batches)


def test_reference_files_holding_object_arrays_are_refused_naming_the_file_and_the_array(tmp_path):
    """Statistics and features files are read with allow_pickle=False: an array of Python objects (which only
    unpickling, and so code the file names, could read) is one error naming the file, the array and what is read."""
    from rfbench.metrics.reference import ReferenceFileError, ReferenceKey, reference_features, reference_stats

    stats = GaussianStats.from_features(_features(50, 4, 1))
    np.savez(tmp_path / "objects.npz", mu=stats.mu, sigma=stats.sigma, n=np.array([50], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz: array 'n' holds Python objects \(dtype object\), which only "
                                         r"unpickling reads .*; rfbench reads numpy files of plain arrays only"):
        GaussianStats.load(tmp_path / "objects.npz")
    # the cache's files: the statistics (.npz) and the features (.npy) of a reference key
    key = ReferenceKey("digits", "train", "digits-cnn", "none", 8)
    x = _features(30, 4, 2)
    _, stats_path = reference_stats(key, tmp_path, lambda: [x])
    _, features_path = reference_features(key, tmp_path, lambda: x.astype(np.float32))
    np.savez(stats_path, mu=stats.mu, sigma=stats.sigma, meta_dataset=np.array(["digits"], dtype=object))
    with pytest.raises(ReferenceFileError, match=rf"{stats_path.name}: array 'meta_dataset' holds Python objects "
                                                 r"\(dtype object\).*; remove it to recompute"):
        reference_stats(key, tmp_path, lambda: [x])
    np.save(features_path, np.zeros(3, dtype=[("feature", "f4"), ("note", "O")]), allow_pickle=True)
    with pytest.raises(ReferenceFileError, match=rf"{features_path.name}: the array holds Python objects \(a "
                                                 r"structured dtype with an object field\).*; remove it to recompute"):
        reference_features(key, tmp_path, lambda: x)


def test_bootstrap_standard_errors():
    from rfbench.metrics import METRICS, MetricInput
    from rfbench.metrics.image import bootstrap_se
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 1))
    se = bootstrap_se(lambda rows: rows.mean(), x, replicates=400)
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(500), rel=0.15)      # the mean's standard error
    assert bootstrap_se(lambda rows: rows.mean(), x, 50) == bootstrap_se(lambda rows: rows.mean(), x, 50)  # seeded
    with pytest.raises(ValueError, match="at least 2 replicates"):
        bootstrap_se(np.mean, x, 1)
    feats = torch.from_numpy(rng.normal(size=(300, 8)))
    ref = torch.from_numpy(rng.normal(size=(400, 8)) + 0.3)
    logits = torch.from_numpy(rng.normal(size=(300, 10)) * 2)
    inputs = dict(z0=feats, z1=feats, features=feats, logits=logits, reference_features=ref)
    off = METRICS["fid"](MetricInput(**inputs))
    on = METRICS["fid"](MetricInput(**inputs, bootstrap=50))
    assert off["fid_se"] is None and on["fid"] == off["fid"] and 0 < on["fid_se"] < on["fid"]
    assert 0 < METRICS["inception_score"](MetricInput(**inputs, bootstrap=50))["is_se"] < 1
    pr = METRICS["precision_recall"](MetricInput(**inputs))
    assert pr["precision_se"] == pytest.approx(math.sqrt(pr["precision"] * (1 - pr["precision"]) / 300))



def test_a_failure_of_another_process_in_the_shared_knn_work_is_raised_here():
    """Under torchrun every process exchanges its result or its error before going on, so that a process whose
    peer failed raises too instead of waiting in the next collective (the exchange stands in for gloo here)."""
    from rfbench.distributed import World
    from rfbench.metrics import knn

    class TwoProcesses(World):
        def all_objects(self, obj):
            return [obj, (None, "OutOfMemoryError: CUDA out of memory")]

    real, fake = _features(60, 4, 31), _features(50, 4, 32)
    with pytest.raises(knn.PeerError, match="rank 1: OutOfMemoryError: CUDA out of memory"):
        precision_recall(real, fake, k=3, device="cpu", world=TwoProcesses(rank=0, size=2))

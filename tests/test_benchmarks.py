"""Micro benchmarks (pytest-benchmark). In the test run they execute once each (--benchmark-disable in
pyproject); for timings run `python -m pytest tests/test_benchmarks.py --benchmark-enable`.

w2 on 2,000 points: POT's network simplex against scipy's linear_sum_assignment, on samples collapsed near the
origin as a one-step 1-RF produces them (the case where the assignment solver is slow), same optimum.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance

from rfbench.metrics import w2
from rfbench.suites import SUITES


@pytest.fixture(scope="module")
def clouds():
    rng = np.random.default_rng(0)
    collapsed = 0.3 * rng.standard_normal((2000, 2))
    target = SUITES["toy2d"].problem.reference(2000)[:2000].double().numpy()
    return collapsed, target


def _lsa_w2(x, y):
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return math.sqrt(cost[rows, cols].mean())


@pytest.fixture(scope="module")
def lsa_reference(clouds):
    return {}  # filled by the reference benchmark, or computed once here when that one is deselected


def test_bench_w2_scipy_assignment_reference(benchmark, clouds, lsa_reference):
    lsa_reference["w2"] = benchmark(_lsa_w2, *clouds)


def test_bench_w2_pot(benchmark, clouds, lsa_reference):
    value = benchmark(w2, *clouds)
    expected = lsa_reference["w2"] if "w2" in lsa_reference else _lsa_w2(*clouds)
    assert value == pytest.approx(expected, rel=1e-12)


# -- image metrics: frechet_distance against clean-fid's sqrtm route on 2048-d statistics -----------------------------

@pytest.fixture(scope="module")
def stats_2048(request):
    """Statistics of Inception's 2048 dimensions when the benchmarks are timed; with them disabled (the test run,
    where only the agreement with clean-fid is checked) 768, where clean-fid's sqrtm takes 1 s instead of 30."""
    from rfbench.metrics.image import GaussianStats

    rng = np.random.default_rng(0)
    d = 768 if request.config.getoption("benchmark_disable") else 2048
    mix = rng.standard_normal((d, d)) / math.sqrt(d)
    a = GaussianStats.from_features(rng.standard_normal((4096, d)) @ mix)
    b = GaussianStats.from_features(rng.standard_normal((4096, d)) @ mix * 1.1 + 0.05)
    return a, b


def test_bench_frechet_distance_ours(benchmark, stats_2048):
    from rfbench.metrics.image import frechet_distance

    a, b = stats_2048
    benchmark(frechet_distance, a.mu, a.sigma, b.mu, b.sigma)


def test_bench_frechet_distance_ours_cached_reference(benchmark, stats_2048):
    from rfbench.metrics.image import frechet_distance_stats

    a, b = stats_2048
    b.factor  # the reference's factor, computed once per reference set
    benchmark(frechet_distance_stats, a, b)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # clean-fid passes scipy's deprecated disp argument
def test_bench_frechet_distance_clean_fid_sqrtm_reference(benchmark, stats_2048):
    from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

    from rfbench.metrics.image import frechet_distance

    a, b = stats_2048
    value = benchmark(cleanfid_frechet_distance, a.mu, a.sigma, b.mu, b.sigma)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(value, rel=1e-6)


# -- precision/recall: blocked k-NN against one full distance matrix -------------------------------------------------

@pytest.fixture(scope="module")
def pr_features():
    rng = np.random.default_rng(1)
    return rng.standard_normal((4000, 64)), rng.standard_normal((4000, 64)) * 1.2 + 0.1


def _full_matrix_precision_recall(real, fake, k=3):
    def sq(x, y):
        return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0)

    r_real, r_fake = np.partition(sq(real, real), k, axis=1)[:, k], np.partition(sq(fake, fake), k, axis=1)[:, k]
    return float((sq(fake, real) <= r_real[None]).any(1).mean()), float((sq(real, fake) <= r_fake[None]).any(1).mean())


def test_bench_precision_recall_ours(benchmark, pr_features):
    from rfbench.metrics.image import precision_recall

    p, r = benchmark(precision_recall, *pr_features, device="cpu")
    expected = _full_matrix_precision_recall(*pr_features)
    assert abs(p - expected[0]) <= 1 / 4000 and abs(r - expected[1]) <= 1 / 4000  # at most one tie flips


def test_bench_precision_recall_full_matrix_reference(benchmark, pr_features):
    benchmark(_full_matrix_precision_recall, *pr_features)

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
    target = SUITES["toy2d"].problem.reference(2000).double().numpy()
    return collapsed, target


def _lsa_w2(x, y):
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return math.sqrt(cost[rows, cols].mean())


def test_bench_w2_pot(benchmark, clouds):
    value = benchmark(w2, *clouds)
    assert value == pytest.approx(_lsa_w2(*clouds), rel=1e-12)


def test_bench_w2_scipy_assignment_reference(benchmark, clouds):
    benchmark(_lsa_w2, *clouds)

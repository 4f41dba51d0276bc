"""Coupling metrics and w2: hand-made cases, invariants and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import torch

from rfbench.metrics import METRICS, MetricInput, crossing_prob, segments_intersect, straightness, transport_cost, w2


def _seg(*coords):
    return [torch.tensor(c, dtype=torch.float64) for c in coords]


@pytest.mark.parametrize("name,p1,p2,q1,q2,expected", [
    ("crossing", (0, 0), (2, 2), (0, 2), (2, 0), True),
    ("disjoint", (0, 0), (1, 0), (0, 1), (1, 2), False),
    ("parallel", (0, 0), (2, 0), (0, 1), (2, 1), False),
    ("collinear-overlapping", (0, 0), (2, 0), (1, 0), (3, 0), True),
    ("collinear-disjoint", (0, 0), (1, 0), (2, 0), (3, 0), False),
    ("touching-at-an-end", (0, 0), (1, 1), (1, 1), (2, 0), True),
    ("end-on-interior", (0, 0), (2, 0), (1, 0), (1, 5), True),
    ("t-short-of-touching", (0, 0), (2, 0), (1, 0.001), (1, 5), False),
    ("identical", (0, 0), (1, 1), (0, 0), (1, 1), True),
])
def test_segments_intersect_hand_made(name, p1, p2, q1, q2, expected):
    p1, p2, q1, q2 = _seg(p1, p2, q1, q2)
    assert bool(segments_intersect(p1, p2, q1, q2)) is expected
    assert bool(segments_intersect(q1, q2, p1, p2)) is expected          # symmetric in the two segments
    assert bool(segments_intersect(p2, p1, q2, q1)) is expected          # and in each segment's direction


def test_segments_intersect_is_vectorised():
    p1 = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p2 = torch.tensor([[2.0, 2.0], [1.0, 0.0]])
    q1 = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    q2 = torch.tensor([[2.0, 0.0], [1.0, 2.0]])
    assert segments_intersect(p1, p2, q1, q2).tolist() == [True, False]


def test_crossing_prob_of_a_translation_is_zero_and_of_a_reflection_is_high():
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2000, 2, generator=gen)
    p, se = crossing_prob(z0, z0 + torch.tensor([5.0, 0.0]))
    assert p == 0.0 and se == 0.0          # parallel segments never cross
    p_flip, se_flip = crossing_prob(z0, -z0)  # every segment passes through the origin
    assert p_flip == 1.0


def test_crossing_prob_standard_error_and_determinism():
    """Its standard error is the spread of the estimate over independent sample sets (the samples' share of the
    error included, which the binomial error sqrt(p (1 - p) / draws) leaves out), and it is deterministic."""
    gen = torch.Generator().manual_seed(1)
    estimates, errors, binomial = [], [], []
    for _ in range(40):
        z0 = torch.randn(500, 2, generator=gen)
        angle = 1.5 * z0.norm(dim=1)       # a swirl: segments cross often, and more for some points than others
        z1 = torch.stack([angle.cos() * z0[:, 0] - angle.sin() * z0[:, 1],
                          angle.sin() * z0[:, 0] + angle.cos() * z0[:, 1]], dim=1)
        p, se = crossing_prob(z0, z1, num_draws=20_000, seed=3)
        estimates.append(p)
        errors.append(se)
        binomial.append(math.sqrt(p * (1 - p) / 20_000))
    spread = float(torch.tensor(estimates).std())
    assert float(torch.tensor(errors).mean()) == pytest.approx(spread, rel=0.3)
    assert float(torch.tensor(binomial).mean()) < 0.5 * spread       # what the binomial error would have said
    assert crossing_prob(z0, z1, num_draws=4000, seed=3) == crossing_prob(z0, z1, num_draws=4000, seed=3)


def test_crossing_prob_only_in_2d():
    with pytest.raises(ValueError, match="only defined for 2D"):
        crossing_prob(torch.zeros(10, 3), torch.ones(10, 3))
    out = METRICS["crossing_prob"](MetricInput(z0=torch.zeros(10, 3), z1=torch.ones(10, 3)))
    assert out == {"crossing_prob": None, "crossing_prob_se": None}


def test_transport_cost():
    z0 = torch.randn(100, 2, 3)
    assert transport_cost(z0, z0) == 0.0
    assert transport_cost(z0, z0 + 2.0) == pytest.approx(6 * 4.0)  # 6 dimensions, each moved by 2
    with pytest.raises(ValueError, match="same shape"):
        transport_cost(z0, z0[:5])
    z1 = z0 + torch.randn(100, 2, 3)
    value, se = transport_cost(z0, z1, with_se=True)
    sq = ((z1 - z0).double() ** 2).sum(dim=(1, 2)).numpy()
    assert value == pytest.approx(sq.mean()) and se == pytest.approx(sq.std(ddof=1) / 10)
    assert set(METRICS["transport_cost"](MetricInput(z0=z0, z1=z1))) == {"transport_cost", "transport_cost_se"}


def test_straightness_of_straight_and_curved_paths():
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    z0 = torch.randn(50, 2, dtype=torch.float64)
    d = torch.tensor([1.0, -2.0], dtype=torch.float64)
    straight = torch.stack([z0 + t * d for t in times])
    assert straightness(times, straight, d.expand(10, 50, 2)) == pytest.approx(0.0, abs=1e-24)
    # a velocity off the chord by a constant e in half of the time and -e in the other half
    e = torch.tensor([0.0, 3.0], dtype=torch.float64)
    vel = torch.stack([d + (e if k < 5 else -e) for k in range(10)]).unsqueeze(1).expand(10, 50, 2)
    assert straightness(times, straight, vel) == pytest.approx(9.0)  # integral of ||e||^2 dt


def test_straightness_needs_matching_lengths():
    with pytest.raises(ValueError, match="K\\+1 times and states and K velocities"):
        straightness(torch.linspace(0, 1, 5), torch.zeros(5, 3, 2), torch.zeros(5, 3, 2))


def test_w2_equals_the_assignment_solution_and_closed_forms():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) * 2 + 1
    cost = scipy.spatial.distance.cdist(x, y, "sqeuclidean")
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    assert w2(x, y) == pytest.approx(math.sqrt(cost[rows, cols].mean()), rel=1e-12)
    assert w2(x, x) == 0.0                                                   # a set with itself
    assert w2(x, x + np.array([3.0, 4.0])) == pytest.approx(5.0, rel=1e-12)  # a translation moves by its length
    assert w2(x, x[::-1].copy()) == 0.0                                      # order does not matter


def test_w2_bad_input():
    with pytest.raises(ValueError, match="same size"):
        w2(np.zeros((10, 2)), np.zeros((11, 2)))
    with pytest.raises(ValueError, match="non-finite points \\(1 rows of x"):
        w2(np.array([[0.0, np.nan], [1.0, 1.0]]), np.zeros((2, 2)))


def test_energy_distance_is_the_unbiased_statistic_with_a_leave_one_out_jackknife():
    import scipy.stats

    from rfbench.metrics.distances import energy_distance, energy_terms
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 1)), rng.normal(0.3, 1.2, size=(55, 1))
    a, b, c = np.abs(x - y.T), np.abs(x - x.T), np.abs(y - y.T)
    n, m = len(x), len(y)
    value, loo_x, loo_y = energy_terms(x, y)
    assert value == pytest.approx(2 * a.mean() - b.sum() / (n * (n - 1)) - c.sum() / (m * (m - 1)), abs=1e-13)
    # the plug-in (V-statistic) form of the same distances is scipy's 1D energy distance, squared
    assert 2 * a.mean() - b.mean() - c.mean() == pytest.approx(scipy.stats.energy_distance(x[:, 0], y[:, 0]) ** 2,
                                                               abs=1e-13)
    # the closed-form leave-one-out estimates are the statistic recomputed without each point
    assert loo_x == pytest.approx([energy_terms(np.delete(x, i, 0), y)[0] for i in range(n)], abs=1e-12)
    assert loo_y == pytest.approx([energy_terms(x, np.delete(y, j, 0))[0] for j in range(m)], abs=1e-12)
    # in 2D, the reference's own term (kept per reference tensor) gives what a fresh computation gives
    ref = torch.randn((500, 2), generator=torch.Generator().manual_seed(0))
    pts = torch.randn((300, 2), generator=torch.Generator().manual_seed(1)) * 1.1
    first, again, fresh = energy_distance(pts, ref), energy_distance(pts, ref), energy_distance(pts, ref.clone())
    assert first == again and first[0] == pytest.approx(fresh[0], abs=1e-12)
    with pytest.raises(ValueError, match="rows of x are not finite"):
        energy_distance(np.array([[np.inf, 0.0], [1.0, 1.0]]), ref)
    with pytest.raises(ValueError, match="one dimension"):
        energy_distance(np.zeros((5, 3)), ref)


def test_energy_distance_is_zero_for_the_target_itself_and_its_error_covers_the_spread():
    """Over 40 independent sets: samples of the target score 0 within their error (no floor, unlike w2), a 10%
    dilation scores above 0, and the jackknife error is near the spread of the estimate (conservative where the
    statistic is degenerate, at 0)."""
    from rfbench.data.toy import circle_mixture
    from rfbench.metrics.distances import energy_distance
    target = circle_mixture(8, 4.0, 0.3)
    for dilation, low, high in ((1.0, 0.9, 1.8), (1.1, 0.8, 1.5)):
        values, errors = [], []
        for s in range(40):
            x = target.sample(400, torch.Generator().manual_seed(100 + s)) * dilation
            value, se = energy_distance(x, target.sample(1000, torch.Generator().manual_seed(5000 + s)))
            values.append(value)
            errors.append(se)
        spread, mean_se = float(np.std(values, ddof=1)), float(np.mean(errors))
        assert low * spread < mean_se < high * spread, (dilation, mean_se, spread)
        if dilation == 1.0:
            assert abs(np.mean(values)) < 3 * spread / math.sqrt(40)       # unbiased: 0 on average
        else:
            assert np.mean(values) > 5 * spread / math.sqrt(40)


def test_metric_registry_says_direction_and_columns():
    assert not METRICS["w2"].higher_is_better and METRICS["crossing_prob"].columns == ("crossing_prob",
                                                                                      "crossing_prob_se")
    with pytest.raises(KeyError, match="Did you mean: w2"):
        METRICS["w3"]

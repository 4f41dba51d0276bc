"""The published checkpoints' time conventions: the rectified-flow time window and score-SDE's VP / sub-VP
probability-flow ODEs, checked on Gaussian data, where the exact noise prediction and the exact ODE solution are
known (the PF-ODE of a Gaussian scales each point by sqrt(var(t_end) / var(t_start)))."""

from __future__ import annotations

import math

import pytest
import torch

from rfbench import sample
from rfbench.models.score_sde import TimeWindowFlow, VPSDEFlow


def _exact_noise_net(flow: VPSDEFlow, data_std: float):
    """net(x, labels) = -score * std for data ~ N(0, data_std^2 I): std * x / (alpha^2 data_std^2 + std^2)."""
    def net(x, labels):
        alpha, std = flow.marginal(labels.double() / 999)
        var = alpha ** 2 * data_std ** 2 + std ** 2
        return (std / var).reshape(-1, 1).to(x.dtype) * x
    return net


@pytest.mark.parametrize("sub_vp", [False, True])
def test_vp_and_subvp_probability_flow_maps_gaussian_marginals_exactly(sub_vp):
    data_std = 0.5
    flow = VPSDEFlow(None, sub_vp=sub_vp)
    flow.net = _exact_noise_net(flow, data_std)
    alpha1, std1 = flow.marginal(1.0)
    alpha_e, std_e = flow.marginal(flow.eps)
    var1 = float(alpha1 ** 2 * data_std ** 2 + std1 ** 2)
    var_e = float(alpha_e ** 2 * data_std ** 2 + std_e ** 2)
    x0 = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * math.sqrt(var1)
    result = sample(flow, x0, "rk45", rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(result.x, x0 * math.sqrt(var_e / var1), rtol=1e-6, atol=1e-8)
    assert var_e == pytest.approx(data_std ** 2, rel=2e-2)          # at eps the marginal is nearly the data's
    if not sub_vp:
        assert var1 == pytest.approx(1.0, abs=1e-4)                  # the VP prior is N(0, I)


def test_vp_marginals_follow_score_sde_formulas():
    t = torch.tensor([1e-3, 0.25, 0.5, 1.0], dtype=torch.float64)
    m = -0.25 * t ** 2 * (20 - 0.1) - 0.5 * t * 0.1
    alpha, std = VPSDEFlow(None).marginal(t)
    torch.testing.assert_close(alpha, torch.exp(m))
    torch.testing.assert_close(std, torch.sqrt(1 - torch.exp(2 * m)))
    _, std_sub = VPSDEFlow(None, sub_vp=True).marginal(t)
    torch.testing.assert_close(std_sub, 1 - torch.exp(2 * m))


def test_time_window_euler_is_the_official_euler_sampler():
    """gnobitab/RectifiedFlow's Euler: dt = 1/N, the network at t_i = i/N (1 - eps) + eps."""
    def net(x, t):
        return torch.sin(3 * t).reshape(-1, 1) * x + t.reshape(-1, 1)
    eps, n = 1e-3, 4
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    official = x0.clone()
    for i in range(n):
        t = torch.full((5,), i / n * (1 - eps) + eps, dtype=torch.float64)
        official = official + net(official, t) / n
    ours = sample(TimeWindowFlow(net, eps), x0, "euler", n)
    torch.testing.assert_close(ours.x, official, rtol=1e-14, atol=1e-14)
    one_step = sample(TimeWindowFlow(net, eps), x0, "euler", 1).x
    torch.testing.assert_close(one_step, x0 + net(x0, torch.full((5,), eps, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"t_min must be in \[0, 1\)"):
        TimeWindowFlow(net, 1.0)

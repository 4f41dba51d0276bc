"""The stochastic samplers: Euler ancestral, DPM-Solver++(2M) SDE and EDM's stochastic sampler (edm-heun with
s_churn > 0), against their official code with the same injected noise (the outputs pinned below), and their seeded
noise: reproducible whatever the batch, different for other seeds."""

from __future__ import annotations

import pytest
import torch

from rfbench.models.paths import path_of
from rfbench.models.score_sde import VPSDEFlow
from rfbench.samplers import sample
from tests.problems import GaussianFlow

MU, S = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), 0.6


def vp_eps_net(x, labels):
    """score_sde's noise network for data N(MU, S^2 I) under the VP SDE (beta 0.1..20): labels = 999 t."""
    t = (labels.to(torch.float64) / 999.0).reshape(-1, 1)
    m = -0.25 * t ** 2 * 19.9 - 0.5 * t * 0.1
    a, var = torch.exp(m), -torch.expm1(2 * m)
    return (var.sqrt() * (x - a * MU) / (a ** 2 * S ** 2 + var)).to(x.dtype)


def latents():
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def injected():
    """``noise(i)``: the pre-drawn tensors in the order asked for, as the official code was given them."""
    draws = torch.randn(40, 4, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    asked = []

    def noise(i):
        asked.append(i)
        return draws[len(asked) - 1]
    return noise, asked


# The official code in float64 on the posterior mean of N(MU, S^2 I) in EDM's variables, D(x, sigma) = MU + S^2 /
# (S^2 + sigma^2) (x - MU), from latents() with the noise of injected(): crowsonkb/k-diffusion 4601bf0
# k_diffusion/sampling.py sample_euler_ancestral / sample_dpmpp_2m_sde (solver_type "midpoint") from latents() *
# sigmas[0] with noise_sampler returning the draws in order, sigmas = get_sigmas_karras(N, 0.002, 80) in float64 (on
# VP: get_sigmas_karras(N + 1, VP's smallest sigma 0.010486, 80)[:-1], and rfbench's result divided by alpha at the
# grid's end); NVlabs/edm 008a4e5 generate.py edm_sampler(net, latents(), randn_like=the draws in order, num_steps,
# S_churn, S_min, S_max, S_noise), net.sigma_min 0 on the flow and VP's smallest sigma on VP (num_steps = rfbench's
# steps + 1 there). Measured: at most 1.6e-14 from rfbench, the same NFE and the same number of draws.
OFFICIAL = {
    "euler-ancestral/6": [
        [-0.085769750007, -1.124557385568, 1.5810930236],
        [0.288187094035, -1.005781271371, 1.637310871441],
        [0.12704313975, -1.370467035984, 2.013916859557],
        [0.439757560457, -1.203675975051, 2.363950460193],
    ],
    "euler-ancestral/8/eta=0.5,s_noise=0.9": [
        [0.083123520298, -1.039715680075, 2.161881386695],
        [0.180187329132, -0.834709570532, 1.465453574183],
        [0.328004755603, -0.545026277332, 2.221553036576],
        [0.115761387178, -0.99759887509, 2.023702940117],
    ],
    "dpm++2m-sde/6": [
        [-0.74004773514, -1.225654187882, 1.032006111537],
        [0.052055707536, -0.974191090915, 1.221572947427],
        [-0.275486309031, -1.873623580863, 1.952248149638],
        [0.417459203749, -1.402851296203, 2.847770548591],
    ],
    "dpm++2m-sde/12": [
        [0.890664850805, -1.636510776168, 1.365866044016],
        [0.054015704664, -0.809062223873, 0.975400768733],
        [0.109382080387, -2.102133156914, 2.641040882876],
        [-0.028618498449, -0.331504995807, 1.477102481318],
    ],
    "dpm++2m-sde/8/eta=0.7,s_noise=0.8": [
        [0.202275331658, -0.980200579626, 1.82936191619],
        [0.701797246874, -1.381247901676, 1.438401756909],
        [0.857694785315, -0.28937397932, 2.4995570924],
        [0.657884935867, -0.549654766055, 2.242110507698],
    ],
    "edm-heun/6/s_churn=40,s_tmin=0.05,s_tmax=50,s_noise=1.003": [
        [-1.516794996476, -0.966259763448, 1.505720351671],
        [-0.59835780969, -0.506022110393, 0.492635392597],
        [-0.984486673343, -0.831633028386, 2.893424061025],
        [-0.992923793329, -1.568774723338, 2.857135209827],
    ],
    "edm-heun/12/s_churn=80": [
        [0.242679823041, -1.488931886061, 1.27924128793],
        [0.106677083688, -0.888422144996, 0.772895526417],
        [0.155133050129, -1.698656317628, 2.865052990203],
        [0.01646291652, -0.241689207123, 1.64066910274],
    ],
    "vp/euler-ancestral/6": [
        [0.415591243147, -1.130860628845, 1.930946830252],
        [0.525731843849, -1.105996291736, 1.704056508365],
        [0.618762324097, -0.750488962377, 2.34054930752],
        [0.589615078105, -0.800391991218, 2.22174345327],
    ],
    "vp/dpm++2m-sde/6": [
        [0.531145328081, -1.28015177666, 1.972255886711],
        [0.560407400058, -1.142834190119, 1.516395951487],
        [0.79896622225, -0.506473250228, 2.675917580543],
        [0.705150637041, -0.566514962334, 2.399741847389],
    ],
    "vp/edm-heun/6/s_churn=30": [                  # EDM's num_steps 7
        [-0.750319444147, -1.306938645367, 1.739716251419],
        [0.301040377384, -1.423393576931, 0.672002897793],
        [0.335611983966, 0.093821076436, 2.802505989916],
        [0.14800055391, -0.885282199014, 2.293364671727],
    ],
}


def _case(key: str):
    parts = key.split("/")
    vp = parts[0] == "vp"
    solver, steps, *rest = parts[1:] if vp else parts
    options = {k: float(v) for k, v in (item.split("=") for item in rest[0].split(","))} if rest else {}
    return vp, solver, int(steps), options


@pytest.mark.parametrize("key", list(OFFICIAL))
def test_equal_to_the_official_code_with_the_same_noise(key):
    vp, solver, steps, options = _case(key)
    model = VPSDEFlow(vp_eps_net) if vp else GaussianFlow(MU, S)
    noise, asked = injected()
    # from the state sigma(t0) latents() (EDM's and k-diffusion's x = sigma_max * latents)
    result = sample(model, latents(), solver, steps, grid="karras", noise=noise, **options)
    if solver == "edm-heun":
        x, nfe, draws = result.x, 2 * steps + (1 if vp else -1), steps + vp
    else:                                          # k-diffusion's x on VP is x / alpha; no draw on a step to sigma = 0
        alpha = path_of(model).alpha_sigma(torch.tensor([1.0], dtype=torch.float64).numpy())[0]
        x, nfe, draws = result.x / float(alpha[0]), steps, steps - (not vp)
    assert result.nfe == nfe and len(asked) == draws and asked == list(range(draws))
    torch.testing.assert_close(x, torch.tensor(OFFICIAL[key], dtype=torch.float64), rtol=0, atol=1e-9)


STOCHASTIC = [("euler-ancestral", {}, "uniform"), ("euler-ancestral", {"eta": 0.5}, "karras"),
              ("dpm++2m-sde", {}, "uniform"), ("dpm++2m-sde", {"eta": 0.5, "s_noise": 0.9}, "logsnr"),
              ("edm-heun", {"s_churn": 20.0}, "karras")]


@pytest.mark.parametrize("solver,options,grid", STOCHASTIC)
def test_a_sample_does_not_depend_on_its_batch_and_follows_its_seed(solver, options, grid):
    flow = GaussianFlow(MU.float(), S)
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    seeds = list(range(100, 108))
    whole = sample(flow, x0, solver, 5, grid=grid, seeds=seeds, **options).x
    parts = [sample(flow, x0[a:b], solver, 5, grid=grid, seeds=seeds[a:b], **options).x for a, b in ((0, 3), (3, 8))]
    assert torch.equal(whole, torch.cat(parts))
    assert torch.equal(whole[2:], sample(flow, x0[2:], solver, 5, grid=grid, seeds=seeds[2:], **options).x)
    other = sample(flow, x0, solver, 5, grid=grid, seeds=[s + 1000 for s in seeds], **options).x
    assert ((other - whole).abs().amax(dim=1) > 1e-3).all()      # the same x0, other noise: every row moves


@pytest.mark.parametrize("solver,options,grid", [("euler-ancestral", {}, "uniform"), ("dpm++2m-sde", {}, "uniform"),
                                                 ("edm-heun", {"s_churn": 30.0}, "karras")])
def test_the_samples_follow_the_data_distribution(solver, options, grid):
    """On the exact model the stochastic samplers sample N(MU, S^2 I): their noise has the right scale. At 256 steps
    the standard deviations are within 4% of S (Euler ancestral's, 3.6% low, converges slowly: 26% at 8 steps, as
    k-diffusion's does; the sampling error of 4,000 draws is about 1%)."""
    n = 4000
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = sample(GaussianFlow(MU, S), x0, solver, 256, grid=grid, seeds=range(n), **options).x
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=4 * S / n ** 0.5)
    torch.testing.assert_close(x.std(0), torch.full((3,), S, dtype=torch.float64), rtol=0.06, atol=0)


def test_without_noise_they_are_the_deterministic_solvers():
    flow = GaussianFlow(MU, S)
    x0 = latents()
    for grid in ("uniform", "logsnr", "karras"):
        torch.testing.assert_close(sample(flow, x0, "dpm++2m-sde", 7, grid=grid, eta=0.0).x,
                                   sample(flow, x0, "dpm++2m", 7, grid=grid, lower_order_final=False).x,
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(sample(flow, x0, "euler-ancestral", 7, grid=grid, eta=0.0).x,
                                   sample(flow, x0, "euler", 7, grid=grid).x, rtol=0, atol=1e-12)   # DDIM on a flow
    with pytest.raises(TypeError, match="deterministic"):
        sample(flow, x0, "euler-ancestral", 3, eta=0.0, seeds=range(4))
    with pytest.raises(TypeError, match="deterministic"):
        sample(flow, x0, "edm-heun", 3, s_churn=0.0, seeds=range(4))


def test_edm_churn_outside_its_sigma_range_leaves_the_deterministic_sampler():
    """gamma = 0 on every step (s_tmax below the grid's smallest sigma) is Algorithm 1 bit for bit, though the noise
    is drawn at every step, as EDM draws it."""
    flow = GaussianFlow(MU.float(), S)
    x0 = latents().float()
    noise, asked = injected()
    plain = sample(flow, x0, "edm-heun", 6).x
    assert torch.equal(sample(flow, x0, "edm-heun", 6, s_churn=40.0, s_tmax=1e-3, noise=noise).x, plain)
    assert asked == list(range(6))
    assert not torch.equal(sample(flow, x0, "edm-heun", 6, s_churn=40.0, seeds=range(4)).x, plain)


@pytest.mark.parametrize("solver,options,message", [
    ("edm-heun", {"s_churn": -1.0}, "edm-heun option s_churn must be a number >= 0, got -1.0"),
    ("edm-heun", {"s_churn": 10.0, "s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin=2.0 exceeds s_tmax=1.0"),
    ("edm-heun", {"s_churn": 10.0, "s_tmax": "50"}, "option s_tmax takes a number"),
    ("euler-ancestral", {"s_noise": -0.5}, "euler-ancestral option s_noise must be a number >= 0"),
    ("dpm++2m-sde", {"eta": 1.5}, "eta must be a number in"),
    ("dpm++2m-sde", {"solver_type": "heun"}, "unknown option"),
])
def test_bad_options_are_refused_in_one_line(solver, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sample(GaussianFlow(MU, S), latents(), solver, 3, seeds=range(4), **options)


def test_a_stochastic_sampler_asks_for_its_seeds():
    with pytest.raises(TypeError, match="dpm\\+\\+2m-sde is stochastic"):
        sample(GaussianFlow(MU, S), latents(), "dpm++2m-sde", 3)

"""Solvers against exact solutions, scipy, and their own NFE claims; the input checks of rfbench.sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch

import rfbench
from rfbench import SOLVERS, NonFiniteError, SamplerError, sample
from rfbench.models import DiffusionModel, linear_betas
from rfbench.registry import UnknownNameError
from tests.problems import GaussianEpsNet, GaussianFlow, TangentODE

MU = torch.tensor([3.0, -1.0], dtype=torch.float64)
FIXED = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}


@pytest.fixture
def flow():
    return GaussianFlow(MU, 0.5)


@pytest.fixture
def x0():
    return rfbench.initial(range(256), (2,), dtype=torch.float64)


class CountCalls:
    """The test's own NFE count, independent of rfbench's wrapper."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.input_shape = getattr(model, "input_shape", None)

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)


@pytest.mark.parametrize("solver,order", sorted(FIXED.items()))
def test_fixed_grid_error_falls_at_the_solver_order(solver, order):
    ode = TangentODE()
    x0 = 0.5 * torch.tanh(rfbench.initial(range(64), (3,), dtype=torch.float64))
    steps = {1: (256, 512), 2: (64, 128), 4: (16, 32)}[order]
    errors = [(sample(ode, x0, solver, n).x - ode.exact(x0)).abs().max().item() for n in steps]
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - order) < 0.35, (solver, errors, observed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", sorted(FIXED))
def test_fixed_grid_reaches_the_exact_map(flow, solver, dtype):
    x0 = rfbench.initial(range(64), (2,), dtype=dtype)
    result = sample(flow, x0, solver, 200)
    assert result.x.dtype == dtype and result.x.shape == x0.shape
    tol = {"euler": 2e-2, "heun": 1e-4, "midpoint": 1e-4, "rk4": 1e-5}[solver]
    assert (result.x - flow.exact(x0)).abs().max().item() < max(tol, 1e-5 if dtype == torch.float32 else 0)


@pytest.mark.parametrize("solver", sorted(FIXED))
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_counted_nfe_equals_the_test_count_and_the_declared_count(flow, x0, solver, steps):
    counter = CountCalls(flow)
    result = sample(counter, x0, solver, steps)
    assert result.nfe == counter.calls == FIXED[solver] * steps == SOLVERS[solver].expected_nfe(steps)


@pytest.mark.parametrize("solver", ["rk45", "dopri5"])
def test_adaptive_solvers_match_the_exact_map_to_their_tolerance(flow, x0, solver):
    counter = CountCalls(flow)
    loose = sample(counter, x0, solver, rtol=1e-4, atol=1e-4)
    assert loose.nfe == counter.calls
    tight = sample(flow, x0, solver, rtol=1e-8, atol=1e-8)
    err_loose = (loose.x - flow.exact(x0)).abs().max().item()
    err_tight = (tight.x - flow.exact(x0)).abs().max().item()
    assert err_loose < 1e-2 and err_tight < 1e-5 and err_tight < err_loose
    assert tight.nfe > loose.nfe
    assert loose.stats["accepted_steps"] >= 1


def test_rk45_is_scipy_solve_ivp(flow, x0):
    """Stepping scipy's RK45 class must give solve_ivp's answer and evaluation count exactly."""
    result = sample(flow, x0, "rk45", rtol=1e-5, atol=1e-5)

    def fun(t, y):
        x = torch.from_numpy(y).reshape(x0.shape)
        return flow(x, torch.full((x0.shape[0],), t, dtype=x.dtype)).numpy().reshape(-1)

    ref = scipy.integrate.solve_ivp(fun, (0.0, 1.0), x0.numpy().reshape(-1), method="RK45", rtol=1e-5, atol=1e-5)
    assert result.nfe == ref.nfev
    np.testing.assert_array_equal(result.x.numpy().reshape(-1), ref.y[:, -1])
    assert result.stats["accepted_steps"] == len(ref.t) - 1
    assert result.nfe == 2 + 6 * (result.stats["accepted_steps"] + result.stats["rejected_steps"])


def test_trajectory_has_states_and_velocities(flow, x0):
    for solver, steps in [("euler", 4), ("heun", 3), ("rk45", None), ("dopri5", None)]:
        traj = sample(flow, x0, solver, steps, trajectory=True).trajectory
        k = traj.times.shape[0] - 1
        assert traj.times[0] == 0 and traj.times[-1] == 1 and bool((traj.times.diff() > 0).all())
        assert traj.states.shape == (k + 1, *x0.shape) and traj.velocities.shape == (k, *x0.shape)
        torch.testing.assert_close(traj.states[0], x0)
        torch.testing.assert_close(traj.velocities[0], flow(x0, torch.zeros(x0.shape[0], dtype=x0.dtype)))


def test_euler_trajectory_velocities_are_its_secants(flow, x0):
    traj = sample(flow, x0, "euler", 5, trajectory=True).trajectory
    secants = (traj.states[1:] - traj.states[:-1]) / 0.2
    torch.testing.assert_close(secants, traj.velocities)


# -- DDPM-style models ---------------------------------------------------------------------------------------------

@pytest.fixture
def gauss_eps():
    return GaussianEpsNet(MU, 0.5)


def test_probability_flow_ode_of_a_diffusion_model_matches_the_exact_flow(gauss_eps, x0):
    model, ab = gauss_eps.model, gauss_eps.model.alphas_cumprod
    exact = gauss_eps.exact_ode(x0, ab[-1].item(), ab[0].item())
    loose = sample(model, x0, "rk45")
    tight = sample(model, x0, "rk45", rtol=1e-8, atol=1e-8)
    assert (loose.x - exact).abs().max().item() < 1e-4
    assert (tight.x - exact).abs().max().item() < 1e-7
    errors = [(sample(model, x0, "heun", n).x - exact).abs().max().item() for n in (250, 500)]
    assert errors[1] < 1e-4 and 1.6 < math.log2(errors[0] / errors[1]) < 2.4, errors  # smooth: second order


def test_ddim_converges_to_the_ode_solution_ending_at_alpha_bar_one(gauss_eps, x0):
    model = gauss_eps.model
    exact = gauss_eps.exact_ode(x0, model.alphas_cumprod[-1].item(), 1.0)
    errors = [(sample(model, x0, "ddim", s).x - exact).abs().max().item() for s in (100, 1000)]
    assert errors[1] < 0.01 and errors[1] < errors[0] / 5


def test_ddim_single_step_is_the_x0_prediction(gauss_eps, x0):
    """With S=1 the only timestep is 0 and the step goes to alpha_bar=1: x = x0_hat."""
    model = gauss_eps.model
    a = model.alphas_cumprod[0].item()
    eps = gauss_eps(x0, torch.zeros(x0.shape[0], dtype=torch.long))
    torch.testing.assert_close(sample(model, x0, "ddim", 1).x, (x0 - math.sqrt(1 - a) * eps) / math.sqrt(a))


@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_ancestral_sampling_reaches_the_target_distribution(gauss_eps, steps):
    seeds = range(20_000)
    x = sample(gauss_eps.model, rfbench.initial(seeds, (2,), dtype=torch.float64), "ddpm", steps, seeds=seeds).x
    se_mean = 0.5 / math.sqrt(len(seeds))
    assert (x.mean(0) - MU).abs().max().item() < 5 * se_mean
    assert (x.std(0) - 0.5).abs().max().item() < (0.01 if steps == 1000 else 0.03)


def test_stochastic_samplers_are_independent_of_batch_composition(gauss_eps):
    seeds = list(range(10, 17))
    x0 = rfbench.initial(seeds, (2,), dtype=torch.float64)
    for solver, opts in [("ddpm", {}), ("ddim", {"eta": 1.0})]:
        whole = sample(gauss_eps.model, x0, solver, 20, seeds=seeds, **opts).x
        parts = torch.cat([sample(gauss_eps.model, x0[i:i + 1], solver, 20, seeds=seeds[i:i + 1], **opts).x
                           for i in range(len(seeds))])
        torch.testing.assert_close(whole, parts, rtol=0, atol=1e-12)
        other = sample(gauss_eps.model, x0, solver, 20, seeds=[s + 100 for s in seeds], **opts).x
        assert not torch.allclose(whole, other)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_predictions_convert_to_the_same_eps(gauss_eps, x0, prediction):
    ab = gauss_eps.model.alphas_cumprod

    def net(x, timesteps):
        eps = gauss_eps(x, timesteps)
        a = ab[timesteps.long()].to(x).reshape(-1, 1)
        x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return x0_hat if prediction == "x0" else a.sqrt() * eps - (1 - a).sqrt() * x0_hat

    steps = torch.randint(1000, (x0.shape[0],))
    converted = DiffusionModel(net, prediction=prediction).eps(x0, steps)
    torch.testing.assert_close(converted, gauss_eps(x0, steps))


def test_discrete_samplers_count_nfe(gauss_eps, x0):
    for solver, steps in [("ddim", 7), ("ddpm", 13)]:
        seeds = range(x0.shape[0]) if solver == "ddpm" else None
        assert sample(gauss_eps.model, x0, solver, steps, seeds=seeds).nfe == steps


# -- bad input -------------------------------------------------------------------------------------------------------

def test_unknown_solver_lists_the_names(flow, x0):
    with pytest.raises(UnknownNameError, match=r"Unknown solver 'eulr'\. Did you mean: euler.*Known solvers: "
                                               r".*heun, ipndm, midpoint, rk4, rk45"):
        sample(flow, x0, "eulr", 4)


@pytest.mark.parametrize("steps", [0, -3, 2.5, None, True])
def test_fixed_grid_steps_must_be_a_positive_integer(flow, x0, steps):
    with pytest.raises(ValueError, match="steps, an integer >= 1"):
        sample(flow, x0, "euler", steps)


def test_adaptive_solvers_refuse_steps(flow, x0):
    with pytest.raises(ValueError, match="rk45 is adaptive"):
        sample(flow, x0, "rk45", 10)


def test_unknown_options_are_errors(flow, x0):
    with pytest.raises(TypeError, match=r"rk45 got unknown option\(s\) rtoll; it takes: rtol, atol"):
        sample(flow, x0, "rk45", rtoll=1e-3)
    with pytest.raises(TypeError, match="euler got unknown option"):
        sample(flow, x0, "euler", 4, eta=0.5)


def test_ddim_and_ddpm_refuse_a_flow_model(flow, x0):
    for solver in ("ddim", "ddpm"):
        with pytest.raises(TypeError, match=f"{solver} samples DDPM-style models"):
            sample(flow, x0, solver, 10, seeds=range(x0.shape[0]))


def test_x0_of_the_wrong_shape_for_the_model(flow):
    with pytest.raises(ValueError, match=r"x0 has shape \(4, 3\) but the model takes \(B, 2\)"):
        sample(flow, torch.zeros(4, 3, dtype=torch.float64), "euler", 2)
    with pytest.raises(ValueError, match="x0 must have shape"):
        sample(flow, torch.zeros(4), "euler", 2)


def test_a_model_returning_the_wrong_shape(x0):
    with pytest.raises(SamplerError, match=r"returned \(256, 1\) for an input of shape \(256, 2\)"):
        sample(lambda x, t: x[:, :1], x0, "euler", 2)


def test_nan_from_the_model_is_a_clear_error(x0):
    nan_model = lambda x, t: torch.where(t.reshape(-1, 1) > 0.5, torch.nan, 1.0) * torch.ones_like(x)  # noqa: E731
    with pytest.raises(NonFiniteError, match="256 of 256 rows contain NaN"):
        sample(nan_model, x0, "euler", 4)
    with pytest.raises(NonFiniteError, match="rk45: the model returned non-finite velocities"):
        sample(nan_model, x0, "rk45")


def test_stochastic_samplers_need_seeds_or_noise(gauss_eps, x0):
    with pytest.raises(TypeError, match="ddpm is stochastic"):
        sample(gauss_eps.model, x0, "ddpm", 10)
    with pytest.raises(ValueError, match="seeds has 3 entries but x0 has 256 rows"):
        sample(gauss_eps.model, x0, "ddpm", 10, seeds=[0, 1, 2])
    with pytest.raises(TypeError, match="deterministic"):
        sample(gauss_eps.model, x0, "ddim", 10, seeds=range(256))
    with pytest.raises(ValueError, match="exceeds the model's 1000 timesteps"):
        sample(gauss_eps.model, x0, "ddim", 1001)


def test_diffusion_model_rejects_bad_schedules():
    with pytest.raises(ValueError, match="betas must lie in"):
        DiffusionModel(lambda x, t: x, torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="prediction must be one of eps, x0, v"):
        DiffusionModel(lambda x, t: x, linear_betas(10), prediction="score")


def test_adaptive_solvers_never_evaluate_past_t1(flow, x0):
    seen = []

    def watched(x, t):
        seen.append(float(t.max()))
        return flow(x, t)

    for solver in ("rk45", "dopri5"):
        seen.clear()
        sample(watched, x0, solver)
        assert max(seen) <= 1.0, (solver, max(seen))


def test_dopri5_nan_is_a_clear_error(x0):
    with pytest.raises(NonFiniteError, match="dopri5: the model returned non-finite velocities"):
        sample(lambda x, t: torch.full_like(x, float("nan")), x0, "dopri5")


def test_numpy_integer_steps_are_accepted(flow, x0):
    assert sample(flow, x0, "euler", np.int64(3)).nfe == 3


@pytest.mark.parametrize("eta", ["x", True, -0.1, 1.5])
def test_eta_is_validated(gauss_eps, x0, eta):
    with pytest.raises(ValueError, match="eta must be a number in \\[0, 1\\]"):
        sample(gauss_eps.model, x0, "ddim", 10, eta=eta)


def test_discrete_trajectories_are_strictly_increasing_in_time(gauss_eps, x0):
    traj = sample(gauss_eps.model, x0, "ddim", 10, trajectory=True).trajectory
    assert traj.times.shape == (11,) and traj.velocities is None
    assert bool((traj.times.diff() > 0).all()) and traj.times[-1] == 1
    assert traj.times[0].item() == pytest.approx(1 - 901 / 1000)  # the first timestep of S=10 is 900, not 999


def test_an_integer_only_network_gets_a_clear_error_from_ode_solvers(x0):
    table = torch.nn.Embedding(1000, 2).double()

    def net(x, timesteps):
        return x * 0 + table(timesteps)

    model = DiffusionModel(net)
    assert sample(model, x0, "ddim", 5).x.shape == x0.shape       # integer timesteps work
    for solver in ("euler", "dpm++2m", "unipc", "edm-heun"):     # the data-prediction solvers too
        with pytest.raises(SamplerError, match="first evaluation .* TypeError: .*fractional float timesteps"):
            sample(model, x0, solver, 2)


def test_denoise_takes_an_x0_or_v_networks_own_prediction(gauss_eps, x0):
    """denoise(x, t) is the network's x0 itself, or sqrt(a) x - sqrt(1 - a) v, and all three predictions of one model
    give the same data prediction and the same ODE."""
    eps_model = gauss_eps.model
    t = torch.full((x0.shape[0],), 0.3, dtype=torch.float64)
    tau = (1 - t) * (eps_model.num_timesteps - 1)
    a = eps_model.alpha_bar(tau).reshape(-1, 1)
    x = x0 * 0.7 + 0.2

    def x0_net(z, timesteps):
        at = eps_model.alpha_bar(timesteps).reshape(-1, 1)
        return (z - (1 - at).sqrt() * eps_model.net(z, timesteps)) / at.sqrt()

    def v_net(z, timesteps):
        at = eps_model.alpha_bar(timesteps).reshape(-1, 1)
        eps = eps_model.net(z, timesteps)
        return at.sqrt() * eps - (1 - at).sqrt() * (z - (1 - at).sqrt() * eps) / at.sqrt()

    as_x0 = DiffusionModel(x0_net, eps_model.betas, prediction="x0")
    as_v = DiffusionModel(v_net, eps_model.betas, prediction="v")
    assert torch.equal(as_x0.denoise(x, t), x0_net(x, tau))
    torch.testing.assert_close(as_v.denoise(x, t), a.sqrt() * x - (1 - a).sqrt() * v_net(x, tau), rtol=0, atol=1e-15)
    for other in (as_x0, as_v):
        torch.testing.assert_close(other.denoise(x, t), eps_model.denoise(x, t), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(other(x, t), eps_model(x, t), rtol=1e-10, atol=1e-10)

"""Bad input to rfbench.sample gives one clear line: the model's output checked at every call, x0's dtype against
the model's, the solver and model arguments, the adaptive solvers' max_nfe budget, and the solvers' own failures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rfbench import NonFiniteError, SamplerError, sample
from rfbench.models import DiffusionModel, linear_betas
from rfbench.samplers import BudgetExceeded, check_call, solver_defaults
from rfbench.samplers.ode import MAX_NFE
from rfbench.registry import UnknownNameError
from tests.problems import GaussianFlow

MU = torch.tensor([3.0, -1.0], dtype=torch.float64)


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def x0():
    return torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(4, 2)


class Calls:
    """A model that counts its calls and can change its output from a given call on."""

    def __init__(self, model, change=None, from_call: int = 1):
        self.model, self.change, self.from_call, self.calls = model, change, from_call, 0

    def __call__(self, x, t):
        self.calls += 1
        out = self.model(x, t)
        return self.change(out) if self.change is not None and self.calls >= self.from_call else out


# -- the model's output, at every call ------------------------------------------------------------------------------

def test_an_output_shape_that_changes_after_the_first_call(x0):
    model = Calls(GaussianFlow(MU, 0.5), change=lambda v: torch.cat([v, v[:, :1]], dim=1), from_call=3)
    with pytest.raises(SamplerError) as info:
        sample(model, x0, "euler", 4)
    assert one_line(info) == ("euler (steps=4): the model's velocity at call 3 (t=0.5) returned (4, 3) for an input "
                              "of shape (4, 2); it must return a tensor shaped like its input")
    with pytest.raises(SamplerError, match=r"at call \d+ \(t=[\d.e-]+\) returned float for an input of shape"):
        sample(Calls(GaussianFlow(MU, 0.5), change=lambda v: 1.0, from_call=5), x0, "rk45")


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "rk45", "dopri5", "dpm++2m", "unipc"])
def test_a_non_finite_velocity_at_a_later_call_names_the_call_t_and_the_count(x0, solver):
    def half_nan(v):                                      # row 0 goes NaN from the third call on
        v = v.clone()
        v[0] = float("nan")
        return v
    model = Calls(GaussianFlow(MU, 0.5), change=half_nan, from_call=3)
    steps = None if solver in ("rk45", "dopri5") else 4
    with pytest.raises(NonFiniteError) as info:
        sample(model, x0, solver, steps)
    message = one_line(info)
    lead = f"{solver}: " if steps is None else f"{solver} (steps=4) produced non-finite samples: "
    assert message.startswith(lead + "the model returned non-finite velocities at call 3 (t="), message
    assert message.endswith("1 of 4 rows contain NaN or inf (2 of 8 values)"), message
    assert model.calls == 3                                 # stopped at the call that went wrong


def test_euler_names_the_flow_time_of_the_bad_call(x0):
    model = lambda x, t: torch.where(t.reshape(-1, 1) >= 0.5, torch.inf, 1.0) * torch.ones_like(x)  # noqa: E731
    with pytest.raises(NonFiniteError) as info:
        sample(model, x0, "euler", 4)
    assert "at call 3 (t=0.5): 4 of 4 rows contain NaN or inf (8 of 8 values)" in one_line(info)


def test_a_non_finite_eps_prediction_names_the_timestep(x0):
    model = DiffusionModel(lambda x, ts: torch.full_like(x, float("nan")), linear_betas(10))
    with pytest.raises(NonFiniteError) as info:
        sample(model, x0, "ddim", 2)
    assert one_line(info) == ("ddim (steps=2) produced non-finite samples: the model returned non-finite eps "
                              "predictions at call 1 (timestep 5): 4 of 4 rows contain NaN or inf (8 of 8 values)")


# -- x0's dtype against the model's parameters ---------------------------------------------------------------------

class LinearFlow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return self.layer(x)


def test_x0_of_another_dtype_than_the_model_parameters(x0):
    """A model that fails on an x0 of another dtype than its parameters is told so (on failure only: a model may
    convert its input itself)."""
    net = LinearFlow()
    with pytest.raises(TypeError) as info:
        sample(net, x0, "euler", 2)
    message = one_line(info)
    assert message.startswith("the model failed on its first evaluation (RuntimeError: ")
    assert message.endswith("x0 is torch.float64 but the model's parameters are torch.float32; pass "
                            "x0.to(torch.float32) (or convert the model with .to(torch.float64))")
    assert net.calls == 1
    with pytest.raises(TypeError, match=r"x0 is torch.float64 but the model's parameters are torch.float32"):
        sample(DiffusionModel(net, linear_betas(10)), x0, "ddim", 2)   # a DiffusionModel's network
    assert sample(net, x0.float(), "euler", 2).nfe == 2
    assert sample(net.double(), x0, "euler", 2).nfe == 2
    assert sample(GaussianFlow(MU, 0.5), x0.float(), "euler", 2).nfe == 2   # no parameters: no check
    assert sample(Converting(), x0.float(), "euler", 2).nfe == 2            # converts its input: not refused


class Converting(torch.nn.Module):
    """float64 parameters, float32 input converted inside."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))

    def forward(self, x, t):
        return (x.double() * self.w).to(x.dtype)


class EpsOnly:
    """A DDPM-style model by the protocol alone (eps, alphas_cumprod, num_timesteps), not callable."""

    num_timesteps = 10
    alphas_cumprod = torch.cumprod(1 - linear_betas(10), 0)

    def eps(self, x, timesteps):
        return torch.zeros_like(x)


def test_a_ddpm_style_model_need_not_be_callable(x0):
    assert sample(EpsOnly(), x0, "ddim", 5).nfe == 5


# -- the solver and model arguments -------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", [["euler"], ("euler", "heun"), 3, None])
def test_solver_must_be_a_name(x0, solver):
    with pytest.raises(TypeError) as info:
        sample(GaussianFlow(MU, 0.5), x0, solver, 2)
    message = one_line(info)
    assert message.startswith("solver must be a solver name (a string), one of: ") and "euler, " in message
    assert message.endswith(f"; got {solver!r}")
    with pytest.raises(TypeError, match=r"solver must be a solver name \(a string\)"):
        check_call(solver, 2, {})


def test_an_unknown_solver_name_still_gets_a_did_you_mean(x0):
    with pytest.raises(UnknownNameError) as info:
        sample(GaussianFlow(MU, 0.5), x0, "eulr", 2)
    assert "Did you mean: euler" in one_line(info)


@pytest.mark.parametrize("model,got", [(None, "None"), ("1-rf", "str '1-rf'"), (3, "int 3")])
def test_model_must_be_callable(x0, model, got):
    with pytest.raises(TypeError) as info:
        sample(model, x0, "euler", 2)
    assert one_line(info) == (f"model must be a flow model, a callable model(x, t) -> v, or a "
                              f"rfbench.models.DiffusionModel; got {got}")


# -- the adaptive solvers' budget ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -5, 1.5, 1e5, True, "100", None])
def test_max_nfe_must_be_an_integer_of_at_least_one(x0, value):
    for solver in ("rk45", "dopri5"):
        with pytest.raises(ValueError) as info:
            sample(GaussianFlow(MU, 0.5), x0, solver, max_nfe=value)
        assert one_line(info) == (f"{solver} option max_nfe must be an integer >= 1 (the most model evaluations it "
                                  f"may make), got {value!r}")
    with pytest.raises(TypeError, match="euler got unknown option"):
        check_call("euler", 2, {"max_nfe": 10})
    assert check_call("rk45", None, {"max_nfe": np.int64(10)}) is None


def test_the_default_budget_leaves_cell_options_as_they_were():
    from rfbench.suites.base import Cell
    from rfbench.suites.options import parse_solver_options, with_options
    assert solver_defaults("rk45")["max_nfe"] == solver_defaults("dopri5")["max_nfe"] == MAX_NFE == 100_000
    cells = (Cell("m", "rk45"), Cell("m", "dopri5", options=(("rtol", 1e-4),)))
    assert with_options(cells, parse_solver_options([f"max_nfe={MAX_NFE}"])) == cells   # the default: dropped
    tight = with_options(cells, parse_solver_options(["max_nfe=2000"]))
    assert [c.options for c in tight] == [(("max_nfe", 2000),), (("rtol", 1e-4), ("max_nfe", 2000))]


def stiff(x, t):
    """dx/dt = -1e4 (x - cos t): stiff, so an explicit solver at tight tolerances creeps."""
    return -1e4 * (x - torch.cos(t.to(x.dtype)).reshape(-1, 1))


@pytest.mark.parametrize("solver", ["rk45", "dopri5"])
def test_tight_tolerances_on_a_stiff_field_stop_at_the_budget(x0, solver):
    model = Calls(stiff)
    with pytest.raises(BudgetExceeded) as info:
        sample(model, x0, solver, rtol=1e-12, atol=1e-12, max_nfe=2000)
    message = one_line(info)
    assert message.startswith(f"{solver} spent its budget of max_nfe=2000 model evaluations at t=0.00"), message
    assert ", step size " in message and "(rtol=1e-12, atol=1e-12)" in message
    assert message.endswith("loosen rtol/atol or raise max_nfe")
    assert model.calls == 2000
    assert isinstance(info.value, SamplerError)
    with pytest.raises(BudgetExceeded, match=f"{solver} spent its budget of max_nfe=1 model evaluations at t=0 "):
        sample(stiff, x0, solver, max_nfe=1)


# -- the solvers' own failures ---------------------------------------------------------------------------------------

def blowing_up(x, t):
    """dx/dt = 50 x^2: x(t) = x0 / (1 - 50 x0 t), infinite at t = 0.02 for x0 = 1."""
    return 50 * x ** 2


@pytest.mark.parametrize("solver,failure", [("dopri5", "AssertionError: underflow in dt"),
                                            ("rk45", "Required step size is less than spacing between numbers")],
                         ids=["dopri5", "rk45"])
def test_a_blowing_up_field_is_a_sampler_error_naming_t_and_the_step_size(x0, solver, failure):
    with pytest.raises(SamplerError) as info:
        sample(blowing_up, x0, solver)
    message = one_line(info)
    t = re.match(rf"{solver} failed at t=([\d.e-]+)[: ]", message)
    assert t and float(t.group(1)) == pytest.approx(0.02, abs=1e-4), message     # where x = 1 blows up
    assert "step size" in message and failure in message
    assert message.endswith("the velocity field is singular or blows up there")


def test_the_model_own_error_passes_through_dopri5_unchanged(x0):
    """dopri5 does not wrap the model's error in its own; a first call's error says what the model was passed."""
    calls = []

    def broken(x, t):
        calls.append(1)
        if len(calls) >= 3:
            raise ValueError("the checkpoint has no weights for layer 3")
        return torch.zeros_like(x)
    with pytest.raises(ValueError, match="the checkpoint has no weights for layer 3"):
        sample(broken, x0, "dopri5")
    with pytest.raises(SamplerError, match=r"^dopri5: the model's first evaluation \(velocity\) failed on what "
                                           r"rfbench passed it, .*: ValueError: the checkpoint has no weights") as info:
        sample(broken, x0, "dopri5")
    assert isinstance(info.value.__cause__, ValueError)

"""NFE counted where the network is evaluated: the model a solver gets offers only counted evaluations, evaluations
that reach the network around them count too (a forward pre-hook on the model's torch module), rows count rather
than calls, and a solver whose count is not the one it declares, or a model whose first evaluation fails, gets one
clear line."""

from __future__ import annotations

import contextlib
import textwrap

import pytest
import torch

import rfbench
from rfbench import SamplerError, sample
from rfbench.models import DiffusionModel, linear_betas
from rfbench.plugins import load_plugin
from rfbench.samplers import SOLVERS
from tests.problems import GaussianEpsNet, GaussianFlow

MU = torch.tensor([3.0, -1.0], dtype=torch.float64)


class GaussianModule(torch.nn.Module):
    """GaussianFlow as a torch module, keeping the rows it evaluates."""

    input_shape = (2,)

    def __init__(self):
        super().__init__()
        self.flow = GaussianFlow(MU, 0.5)
        self.rows = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.flow(x, t)


class EpsIdentity(torch.nn.Module):
    """eps(x, timesteps) = x."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture
def x0():
    return torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(8, 2)


@contextlib.contextmanager
def solver(name: str, kind: str, fn, **kwargs):
    """``fn`` registered as solver ``name`` for the block (through the public door), removed after it."""
    rfbench.register_solver(name, kind, **kwargs)(fn)
    try:
        yield name
    finally:
        SOLVERS.remove(name)


def _full(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype)


def test_a_solver_gets_only_counted_evaluations_and_the_models_data(x0):
    seen = {}

    def peek(model, x, *, callback=None):
        seen.clear()
        for name in ("model", "forward", "net", "betas", "eps", "denoise", "gaussian_path", "num_timesteps",
                     "alphas_cumprod", "input_shape"):
            seen[name] = hasattr(model, name)
        try:
            model.model
        except AttributeError as exc:
            seen["error"] = str(exc)
        return x + model(x, 0.0), {}

    with solver("peek", "adaptive", peek):
        flow = GaussianModule()
        assert sample(flow, x0, "peek").nfe == 1
        assert {k for k, v in seen.items() if v is True} == {"input_shape"}
        assert seen["error"] == ("'model': the model a solver receives offers only counted evaluations, model(x, t) "
                                 "and, where the model has them, model.eps(x, timesteps) and model.denoise(x, t), "
                                 "and the model's data: gaussian_path, num_timesteps, alphas_cumprod, input_shape")
        diffusion = DiffusionModel(GaussianEpsNet(MU, 0.5), linear_betas(10))
        assert sample(diffusion, x0, "peek").nfe == 1
        assert {k for k, v in seen.items() if v is True} == {"eps", "denoise", "gaussian_path", "num_timesteps",
                                                             "alphas_cumprod", "input_shape"}


def test_an_evaluation_around_the_counted_model_is_counted_by_the_network_hook(x0):
    """The probe: Heun's second stage through a reference to the network the solver kept (here a closure) got
    Heun's samples in a row that said nfe 1 per step. It counts 2 per step now, and fails a declaration of 1."""
    net = GaussianModule()
    kept = {"net": net}

    def sneaky_heun(model, x, *, times, callback=None):
        for t_cur, t_next in zip(times[:-1], times[1:]):
            h = t_next - t_cur
            d_cur = model(x, t_cur)
            d_prime = kept["net"](x + h * d_cur, _full(x, t_next))       # around the counted model
            x = x + h * (0.5 * d_cur + 0.5 * d_prime)
        return x, {}

    heun = sample(net, x0, "heun", 4)
    net.rows = 0
    with solver("sneaky-heun", "fixed", sneaky_heun, expected_nfe=lambda n: 2 * n):
        result = sample(net, x0, "sneaky-heun", 4)
    assert result.nfe == 8 and isinstance(result.nfe, int)
    assert torch.equal(result.x, heun.x)
    assert net.rows == 8 * x0.shape[0]                  # each evaluation counted once, by the wrapper or the hook
    with solver("sneaky-heun", "fixed", sneaky_heun, expected_nfe=lambda n: n):
        with pytest.raises(SamplerError, match=r"^solver sneaky-heun \(registered by tests.test_counted_nfe; defined "
                                               r"at .*test_counted_nfe.py:\d+\) counted 8 model evaluations at "
                                               r"steps=4, but its expected_nfe\(4\) declares 4: it uses more "
                                               r"evaluations than it declares"):
            sample(net, x0, "sneaky-heun", 4)
    # a DiffusionModel's network is watched too: its eps reached around the counted model
    eps_net = EpsIdentity()

    def sneaky_ddim(model, x, *, timesteps, callback=None):
        ts = torch.full((x.shape[0],), timesteps[0])
        return x + model.eps(x, ts) + eps_net(x, ts), {}

    with solver("sneaky-ddim", "discrete", sneaky_ddim):
        assert sample(DiffusionModel(eps_net, linear_betas(10)), x0, "sneaky-ddim", 3).nfe == 2


def test_nfe_counts_rows_not_calls(x0):
    """The probe: a solver padding its count with one-row calls. A call on k of the batch's B rows counts k / B."""
    net = GaussianModule()

    def padded(model, x, *, times, callback=None):
        for t_cur, t_next in zip(times[:-1], times[1:]):
            model(x[:1], t_cur)                          # one row: 1/8 of an evaluation, not one
            x = x + (t_next - t_cur) * model(x, t_cur)
        return x, {}

    def halves(model, x, *, times, callback=None):
        for t_cur, t_next in zip(times[:-1], times[1:]):
            v = torch.cat([model(x[:3], t_cur), model(x[3:], t_cur)])
            x = x + (t_next - t_cur) * v
        return x, {}

    with solver("padded", "fixed", padded, expected_nfe=lambda n: 2 * n):
        with pytest.raises(SamplerError, match=r"counted 4\.5 model evaluations at steps=4, but its "
                                               r"expected_nfe\(4\) declares 8"):
            sample(net, x0, "padded", 4)
    with solver("padded", "adaptive", lambda model, x, *, callback=None: padded(model, x, times=[0, .25, .5, .75, 1])):
        assert sample(net, x0, "padded").nfe == 4.5
    with solver("halves", "fixed", halves, expected_nfe=lambda n: n):
        result = sample(net, x0, "halves", 4)
    assert result.nfe == 4 and isinstance(result.nfe, int)
    assert torch.equal(result.x, sample(net, x0, "euler", 4).x)


def test_the_hook_is_removed_and_the_callers_own_evaluations_are_not_counted(x0):
    net = GaussianModule()
    assert sample(net, x0, "heun", 3).nfe == 6 and net.rows == 6 * x0.shape[0]   # rfbench's own: counted once
    assert not net._forward_pre_hooks                    # torch's record of the module's hooks: none left

    def callback(i, t, x, v):
        net(x, _full(x, t))                              # the caller's, not the solver's
    assert sample(net, x0, "euler", 4, callback=callback).nfe == 4

    def failing(model, x, *, times, callback=None):
        model(x, 0.0)
        raise RuntimeError("the solver failed half-way")

    with solver("failing", "fixed", failing, expected_nfe=lambda n: n):
        with pytest.raises(RuntimeError, match="the solver failed half-way"):
            sample(net, x0, "failing", 2)
    assert not net._forward_pre_hooks


def test_a_first_evaluation_that_fails_says_what_rfbench_passed(x0):
    """The probe: a plain function around a float32 module, given float64 x0, raised torch's bare
    "mat1 and mat2 must have the same dtype"."""
    net = torch.nn.Linear(2, 2)
    with pytest.raises(SamplerError) as info:
        sample(lambda x, t: net(x), x0, "euler", 2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("euler (steps=2): the model's first evaluation (velocity) failed on what rfbench passed "
                              "it, x (8, 2) torch.float64 on cpu and t (8,) torch.float64 on cpu (t=0): RuntimeError: "
                              "mat1 and mat2 must have the same dtype")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(SamplerError, match=r"^ddim \(steps=2\): the model's first evaluation \(eps prediction\) failed "
                                           r"on what rfbench passed it, x \(8, 2\) torch.float64 on cpu and timesteps "
                                           r"\(8,\) torch.int64 on cpu \(timestep 5\): RuntimeError: mat1 and mat2"):
        sample(DiffusionModel(lambda x, ts: net(x), linear_betas(10)), x0, "ddim", 2)
    assert sample(lambda x, t: net(x), x0.float(), "euler", 2).nfe == 2


def test_a_miscounting_plugin_solver_is_named_with_its_file(tmp_path, x0):
    plugin = tmp_path / "underdeclared.py"
    plugin.write_text(textwrap.dedent("""
        import rfbench

        @rfbench.register_solver("underdeclared", "fixed", expected_nfe=lambda n: n)
        def underdeclared(model, x, *, times, callback=None):
            for t_cur, t_next in zip(times[:-1], times[1:]):
                model(x, t_cur)
                x = x + (t_next - t_cur) * model(x, t_cur)
            return x, {}
        """))
    load_plugin(str(plugin))
    try:
        with pytest.raises(SamplerError) as info:
            sample(GaussianModule(), x0, "underdeclared", 3)
    finally:
        SOLVERS.remove("underdeclared")
    assert str(info.value) == (f"solver underdeclared (registered by --plugin {plugin}; defined at {plugin}:4) "
                               f"counted 6 model evaluations at steps=3, but its expected_nfe(3) declares 3: it uses "
                               f"more evaluations than it declares; fix its expected_nfe or its evaluations (NFE: the "
                               f"rows evaluated over the batch's rows)")

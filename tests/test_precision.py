"""--dtype, --compile and --channels-last: reduced precision only inside the network, compiled networks that agree
with eager ones, and rows and cell keys that say how the networks were evaluated."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rfbench.models import MLP, DiffusionModel, MLPConfig, UNet, UNetConfig, linear_betas
from rfbench.models.speed import prepare
from rfbench.results.store import cell_key
from rfbench.samplers import sample
from rfbench.suites import Cell
from tests.standins import registered, standin


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(MLPConfig(hidden=64, depth=3)).eval()


class Watch(torch.nn.Module):
    """An MLP flow that records the dtype its first layer computes in and the state's dtype it was given."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.seen: list[tuple[torch.dtype, torch.dtype]] = []

    def forward(self, x, t):
        inner = torch.nn.functional.linear(x, torch.ones(2, 2))     # autocast decides this product's dtype
        self.seen.append((x.dtype, inner.dtype))
        return self.net(x, t)


@pytest.mark.parametrize("precision, inner", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_runs_only_inside_the_network(precision, inner):
    net = Watch()
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    exact = sample(net, x0, "heun", 8)
    net.seen.clear()
    low = sample(net, x0, "heun", 8, precision=precision)
    # the network's products in the reduced dtype; the state it is given, and the samples, stay float32
    assert set(net.seen) == {(torch.float32, inner)} and low.x.dtype == torch.float32
    assert low.nfe == exact.nfe == 16
    error = (low.x - exact.x).abs().max().item()
    assert 0 < error < 0.05 * exact.x.abs().max().item()    # bf16 keeps 8 bits: a change, and a small one
    assert torch.get_float32_matmul_precision() == "highest"  # the global setting restored


def test_reduced_precision_reaches_eps_networks_and_unknown_precisions_are_refused():
    torch.manual_seed(1)
    unet = UNet(UNetConfig(channels=8)).eval()
    model = DiffusionModel(lambda x, t: unet(x, t.float() / 999), linear_betas(1000), prediction="eps")
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    exact, low = sample(model, x0, "ddim", 5), sample(model, x0, "ddim", 5, precision="bf16")
    assert low.x.dtype == torch.float32 and 0 < (low.x - exact.x).abs().max() < 0.1 * exact.x.abs().max()
    with pytest.raises(ValueError, match=r"precision \(--dtype\) must be one of fp32, tf32, bf16, fp16; got 'fp8'"):
        sample(model, x0, "ddim", 5, precision="fp8")


def test_channels_last_unet_agrees_with_contiguous():
    torch.manual_seed(2)
    unet = UNet(UNetConfig(channels=8)).eval()
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = sample(unet, x0, "euler", 3).x
    b = sample(prepare(unet, channels_last=True), x0, "euler", 3).x
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="--channels-last needs a torch.nn.Module network; this model is a function"):
        prepare(lambda x, t: x, channels_last=True)


class Shift:
    input_shape = (2,)

    def __call__(self, x, t):
        return torch.full_like(x, 0.5)


def test_precision_and_compile_are_in_every_row_and_the_cell_key(tmp_path):
    """One compiled run (torch.compile of a small MLP on the CPU: about 15 s, the rest of the test 2 s): its
    numbers agree with eager ones to 1e-5; --dtype bf16 is another cell, and a row written before the columns
    existed keeps its key."""
    from rfbench.api import run

    suite = standin("toy2d", "toy2d-precision", {"mlp": _mlp()},
                    cells=(Cell("mlp", "euler", 4), Cell("mlp", "heun", 2)), num_samples=256, batch_size=100)
    with registered(suite):
        common = dict(out=tmp_path / "out", cache=tmp_path / "cache", device="cpu", plots=False)
        eager = run("toy2d-precision", **common)
        low = run("toy2d-precision", dtype="bf16", **common)
        compiled = run("toy2d-precision", compile="default", **common)
    assert set(eager["net_dtype"]) == {"fp32"} and set(low["net_dtype"]) == {"bf16"}
    assert set(eager["compile"]) == {"off"} and set(compiled["compile"]) == {"default"}
    sampled = lambda f: f[f["model"] == "mlp"].set_index("solver")          # noqa: E731
    assert sampled(compiled)["compile_s"].gt(0).all()
    assert "compile_s" not in eager or eager["compile_s"].isna().all()
    for col in ("w2", "energy", "transport_cost"):
        pd.testing.assert_series_equal(sampled(compiled)[col], sampled(eager)[col], rtol=1e-5, atol=1e-6)
        assert (sampled(low)[col] != sampled(eager)[col]).any()           # bf16 was not served from fp32's cells
    cells = {p.name for p in (tmp_path / "out" / "cells").glob("*.json")}
    assert len(cells) == 3 * 3                                          # each run: two cells and its independent row
    old = eager.iloc[1].to_dict()
    new = dict(old)
    for col in ("net_dtype", "compile", "memory_format"):
        old.pop(col)
    assert cell_key(old) == cell_key(new) != cell_key({**new, "net_dtype": "bf16"})


def test_trajectory_velocities_of_adaptive_solvers_are_evaluated_in_the_runs_precision():
    net = Watch()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    result = sample(net, x0, "dopri5", precision="bf16", trajectory=True, rtol=1e-3, atol=1e-3)
    assert result.stats["trajectory_evals"] > 0 and len(net.seen) == result.nfe + result.stats["trajectory_evals"]
    assert {inner for _, inner in net.seen} == {torch.bfloat16}    # the solve's and the trajectory's evaluations

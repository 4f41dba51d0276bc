"""GPU paths (marked `gpu`; skipped without CUDA): noise and samplers agree with the CPU and stay on the device."""

import pytest
import torch

import rfbench
from tests.problems import GaussianEpsNet, GaussianFlow

pytestmark = pytest.mark.gpu


def test_same_x0_on_gpu_and_cpu():
    cpu = rfbench.initial(range(100), (3, 4))
    gpu = rfbench.initial(range(100), (3, 4), device="cuda")
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)


@pytest.mark.parametrize("solver,steps", [("euler", 8), ("heun", 8), ("rk4", 4), ("rk45", None), ("dopri5", None)])
def test_flow_solvers_on_gpu_match_cpu(solver, steps):
    flow = GaussianFlow(torch.tensor([3.0, -1.0]), 0.5)
    x0 = rfbench.initial(range(256), (2,))
    cpu = rfbench.sample(flow, x0, solver, steps)
    gpu = rfbench.sample(flow, x0.cuda(), solver, steps)
    assert gpu.x.is_cuda
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-4, atol=1e-4)


def test_ddpm_on_gpu_uses_the_same_seeded_noise():
    model = GaussianEpsNet(torch.tensor([3.0, -1.0]), 0.5).model
    seeds = range(64)
    x0 = rfbench.initial(seeds, (2,))
    cpu = rfbench.sample(model, x0, "ddpm", 50, seeds=seeds)
    gpu = rfbench.sample(model, x0.cuda(), "ddpm", 50, seeds=seeds)
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-4, atol=1e-4)


def test_auto_batch_size_probes_the_gpu():
    from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
    from rfbench.models.score_sde import TimeWindowFlow
    from rfbench.suites.batching import auto_batch_size
    net = NCSNpp(NCSNppConfig(image_size=32, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,)))
    flow = TimeWindowFlow(net.cuda().eval(), 1e-3)
    example = torch.randn(1, 3, 32, 32)
    size = auto_batch_size(flow, example, torch.device("cuda"), limit=512)
    assert size in (8, 16, 32, 64, 128, 256, 512)
    assert auto_batch_size(flow, example, torch.device("cuda"), limit=24) in (8, 16, 24)
    # a tiny share of the memory gives a smaller batch than a large share
    assert auto_batch_size(flow, example, torch.device("cuda"), limit=4096, fraction=0.001) <= size

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

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


@pytest.mark.parametrize("dtype", ["tf32", "bf16", "fp16"])
def test_reduced_precision_on_gpu_stays_close_to_fp32(dtype):
    from rfbench.models import UNet, UNetConfig

    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=16, channels=32)).cuda().eval()
    x0 = rfbench.initial(range(64), (1, 16, 16), device="cuda")
    exact = rfbench.sample(unet, x0, "heun", 4)
    low = rfbench.sample(unet, x0, "heun", 4, precision=dtype)
    assert low.x.dtype == torch.float32 and low.nfe == exact.nfe
    assert 0 < (low.x - exact.x).abs().max() < 0.05 * exact.x.abs().max()


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_network_on_gpu_agrees_with_eager(mode):
    from rfbench.models import UNet, UNetConfig
    from rfbench.models.speed import prepare

    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=16, channels=32)).cuda().eval()
    x0 = rfbench.initial(range(64), (1, 16, 16), device="cuda")
    eager = rfbench.sample(unet, x0, "euler", 4).x
    fast = prepare(unet, compile_mode=mode, channels_last=True)
    for _ in range(2):      # compiled (and CUDA graphs recorded) on the first call
        compiled = rfbench.sample(fast, x0, "euler", 4).x
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)

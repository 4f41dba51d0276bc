"""The image U-Net, image problems and the image pipeline (samples and real images go through the same steps)."""

from __future__ import annotations

import pytest
import torch

from rfbench import sample
from rfbench.data.digits import load_digits
from rfbench.data.images import ImageProblem, load_images
from rfbench.models import (CheckpointError, DiffusionModel, UNet, UNetConfig, build_network, linear_betas,
                            load_checkpoint, network_spec, save_checkpoint)
from rfbench.models.checkpoint import jsonable
from rfbench.training import TrainConfig, fit, independent_pairs, rectified_flow_loss, seeded_init

TINY = UNetConfig(image_size=8, in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(4,), groups=4)


def test_unet_shapes_time_broadcast_and_device_moves():
    net = UNet(TINY)
    x = torch.randn(5, 1, 8, 8)
    out = net(x, torch.rand(5))
    assert out.shape == x.shape and net.input_shape == (1, 8, 8)
    t = torch.full((5,), 0.3)
    torch.testing.assert_close(net(x, torch.tensor([0.3])), net(x, t))      # (1,) broadcasts over the batch
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, t))        # so does a scalar
    net.to(torch.float64)                                                   # nn.Module machinery still works
    assert net(x.double(), t.double()).dtype == torch.float64
    rgb = UNet(UNetConfig(image_size=16, in_channels=3, channels=8, channel_mult=(1, 2, 2), attn_resolutions=(4,),
                          groups=4))
    assert rgb(torch.randn(2, 3, 16, 16), torch.rand(2)).shape == (2, 3, 16, 16)
    assert isinstance(build_network(TINY), UNet) and network_spec(TINY)["arch"] == "UNetConfig"


def test_unet_outputs_depend_on_time_and_input():
    net = seeded_init(lambda: UNet(TINY), 0)
    for p in net.parameters():      # zero-initialised output convs make a fresh net time-independent; perturb
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 1, 8, 8)
    assert (net(x, torch.zeros(3)) - net(x, torch.ones(3))).abs().max() > 1e-3
    assert (net(x, torch.zeros(3)) - net(x + 1, torch.zeros(3))).abs().max() > 1e-3


@pytest.mark.parametrize("bad, match", [
    (dict(image_size=6, channel_mult=(1, 2, 2)), "divisible by 2\\*\\*\\(len\\(channel_mult\\) - 1\\) = 4"),
    (dict(channels=12, groups=8), "channels\\*mult = 12 must be divisible by groups = 8"),
    (dict(channel_mult=()), "channel_mult must be positive"),
    (dict(dropout=1.0), "dropout must be in \\[0, 1\\)"),
    (dict(channels=9, groups=3), "channels must be even"),
])
def test_unet_config_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**bad)


def test_a_few_training_steps_lower_the_rectified_flow_loss():
    images = load_digits("train")[0]
    pairs = independent_pairs(lambda g, n: torch.randn((n, 1, 8, 8), generator=g), images)
    loss = rectified_flow_loss(pairs)
    net = seeded_init(lambda: UNet(TINY), 0)
    gen = torch.Generator().manual_seed(9)
    before = sum(loss(net, gen, 256, "cpu").item() for _ in range(3)) / 3
    trained, history = fit(net, loss, TrainConfig(steps=60, batch_size=64, lr=3e-3, ema_decay=0.0, seed=0))
    gen = torch.Generator().manual_seed(9)
    after = sum(loss(trained, gen, 256, "cpu").item() for _ in range(3)) / 3
    assert after < 0.8 * before, (before, after)


def test_unet_checkpoint_round_trip_and_mismatch_names_the_key(tmp_path):
    net = seeded_init(lambda: UNet(TINY), 1)
    path = tmp_path / "unet.pt"
    spec = jsonable({"net": network_spec(TINY)})
    save_checkpoint(path, net, spec)
    again = UNet(TINY)
    load_checkpoint(path, again, expected_config=spec)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(again(x, t), net(x, t), rtol=0, atol=0)
    wider = UNetConfig(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2), attn_resolutions=(4,),
                       groups=4)
    with pytest.raises(CheckpointError, match=r"config key 'net.channels' is 8 in the file, expected 16"):
        load_checkpoint(path, UNet(wider), expected_config=jsonable({"net": network_spec(wider)}))
    with pytest.raises(CheckpointError, match=r"unet.pt does not fit UNet"):      # no config given: the shapes
        load_checkpoint(path, UNet(wider))


def test_unet_as_ddpm_eps_network_samples_with_every_diffusion_solver():
    net = UNet(UNetConfig(**{**dict(image_size=8, in_channels=1, channels=8, channel_mult=(1, 2),
                                    attn_resolutions=(4,), groups=4), "time_scale": 1.0}))
    model = DiffusionModel(net, linear_betas(1000), prediction="eps")
    x0 = torch.randn(4, 1, 8, 8)
    for solver, steps in (("ddim", 4), ("ddpm", 4), ("euler", 3)):
        result = sample(model, x0, solver, steps, **({"seeds": list(range(4))} if solver == "ddpm" else {}))
        assert result.x.shape == x0.shape and torch.isfinite(result.x).all()


def test_image_problem_is_seeded_and_checks_shapes():
    problem = ImageProblem("digits", (1, 8, 8))
    x0 = problem.initial(range(5))
    torch.testing.assert_close(problem.initial(range(2, 4)), x0[2:4], rtol=0, atol=0)   # per-seed noise
    assert problem.train_target().shape == (1437, 1, 8, 8)
    independent = problem.independent_target(range(6))
    torch.testing.assert_close(problem.independent_target(range(3, 6)), independent[3:], rtol=0, atol=0)
    held_out = {tuple(r.tolist()) for r in load_digits("test")[0].reshape(360, -1)}
    assert all(tuple(r.tolist()) in held_out for r in independent.reshape(6, -1))   # real images never trained on
    everything = problem.independent_target(range(1000))               # only 360 held-out images: each once
    assert everything.shape[0] == 360 and len({tuple(r.tolist()) for r in everything.reshape(360, -1)}) == 360
    assert problem.to_dict()["train_sha1"] == problem.fingerprint("train") != problem.fingerprint("test")
    with pytest.raises(ValueError, match=r"has images of shape \(1, 8, 8\); the suite expects \(3, 8, 8\)"):
        ImageProblem("digits", (3, 8, 8)).train_target()
    with pytest.raises(ValueError, match="unknown image dataset 'cifar'"):
        ImageProblem("cifar", (3, 32, 32))
    with pytest.raises(KeyError, match="Unknown dataset 'nope'. Known datasets: cifar10, digits"):
        load_images("nope", "train")

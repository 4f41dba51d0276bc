"""Loading models from checkpoint files instead of training them (baselines.published): rfbench's own files are
rebuilt from the config inside them; official files need the suite's network; errors name the file."""

from __future__ import annotations

import pytest
import torch

from baselines.published import load_checkpoint_model
from rfbench.models import DiffusionModel, UNetConfig, build_network, network_spec, save_checkpoint
from rfbench.models.checkpoint import CheckpointError
from rfbench.suites import SUITES

NET = UNetConfig(image_size=8, in_channels=1, channels=8, channel_mult=(1, 2), attn_resolutions=(), groups=4)


def test_rfbench_checkpoints_load_as_flows_and_diffusion_models(tmp_path):
    torch.manual_seed(0)
    flow = build_network(NET).eval()
    save_checkpoint(tmp_path / "flow.pt", flow, {"family": "rectified_flow", "net": network_spec(NET)})
    loaded = load_checkpoint_model("1-rf", tmp_path / "flow.pt", SUITES["digits"], "cpu")
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), flow(x, t), rtol=0, atol=0)
    ddpm_net = build_network(UNetConfig(**{**NET.to_dict(), "time_scale": 1.0})).eval()
    save_checkpoint(tmp_path / "ddpm.pt", ddpm_net,
                    {"family": "ddpm", "num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02,
                     "net": network_spec(UNetConfig(**{**NET.to_dict(), "time_scale": 1.0}))})
    model = load_checkpoint_model("ddpm", tmp_path / "ddpm.pt", SUITES["digits"], "cpu")
    assert isinstance(model, DiffusionModel) and model.num_timesteps == 100


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint for 1-rf not found: .*none\.pt"):
        load_checkpoint_model("1-rf", tmp_path / "none.pt", SUITES["cifar"], "cpu")
    save_checkpoint(tmp_path / "bare.pt", build_network(NET), {"something": 1})
    with pytest.raises(CheckpointError, match=r"bare\.pt: an rfbench checkpoint without a network spec"):
        load_checkpoint_model("1-rf", tmp_path / "bare.pt", SUITES["digits"], "cpu")
    torch.save({"model": {}}, tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match=r"ddpm has no official format"):
        load_checkpoint_model("ddpm", tmp_path / "official.pth", SUITES["digits"], "cpu")
    with pytest.raises(KeyError, match=r"no checkpoint network for suite 'digits'"):
        load_checkpoint_model("1-rf", tmp_path / "official.pth", SUITES["digits"], "cpu")
    with pytest.raises(CheckpointError, match=r"official\.pth \('model'\) does not fit NCSNpp: missing key"):
        load_checkpoint_model("1-rf", tmp_path / "official.pth", SUITES["cifar"], "cpu")

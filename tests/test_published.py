"""Models from files instead of trained (rfbench.models.formats and ModelFile): rfbench's own files are rebuilt from
the config inside them and say what they are; official files need their network; errors name the file."""

from __future__ import annotations

import pytest
import torch

from rfbench.models import DiffusionModel, UNetConfig, build_network, network_spec, save_checkpoint
from rfbench.models.checkpoint import CheckpointError
from rfbench.models.formats import load_model, sniff
from rfbench.models.ncsnpp import NCSNppConfig
from rfbench.models.sources import ModelFile

NET = UNetConfig(image_size=8, in_channels=1, channels=8, channel_mult=(1, 2), attn_resolutions=(), groups=4)


def test_rfbench_checkpoints_load_as_flows_and_diffusion_models(tmp_path):
    torch.manual_seed(0)
    flow = build_network(NET).eval()
    save_checkpoint(tmp_path / "flow.pt", flow, {"family": "rectified_flow", "net": network_spec(NET)})
    loaded = load_model(tmp_path / "flow.pt", "cpu")
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), flow(x, t), rtol=0, atol=0)
    ddpm_net = build_network(UNetConfig(**{**NET.to_dict(), "time_scale": 1.0})).eval()
    save_checkpoint(tmp_path / "ddpm.pt", ddpm_net,
                    {"family": "ddpm", "model": "ddpm", "num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02,
                     "net": network_spec(UNetConfig(**{**NET.to_dict(), "time_scale": 1.0}))})
    model = load_model(tmp_path / "ddpm.pt", "cpu")
    assert isinstance(model, DiffusionModel) and model.num_timesteps == 100
    # the file says what it is: its kind and input shape are read without loading the weights
    assert ModelFile(tmp_path / "ddpm.pt").kind == "diffusion" and ModelFile(tmp_path / "flow.pt").kind == "flow"
    assert ModelFile(tmp_path / "flow.pt").input_shape(None) == (1, 8, 8)
    identity = ModelFile(tmp_path / "flow.pt").identity(None)
    assert identity.source == "rfbench checkpoint" and identity.id.startswith("sha1:")
    assert identity.checkpoint == f"flow.pt (sha1 {identity.id[5:]})"
    # a file given for a model of another kind is refused (the DDPM's file as a flow)
    with pytest.raises(ValueError, match=r"ddpm\.pt \(rfbench checkpoint\) holds a diffusion model, not a flow one"):
        ModelFile(tmp_path / "ddpm.pt", kind="flow").check()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file not found: .*none\.pt"):
        load_model(tmp_path / "none.pt", "cpu")
    assert ModelFile(tmp_path / "none.pt").missing("1-rf").startswith("checkpoint for 1-rf not found: ")
    save_checkpoint(tmp_path / "bare.pt", build_network(NET), {"something": 1})
    with pytest.raises(CheckpointError, match=r"bare\.pt: an rfbench checkpoint without a network spec"):
        load_model(tmp_path / "bare.pt", "cpu")
    torch.save({"model": {}}, tmp_path / "official.pth")
    assert sniff(tmp_path / "official.pth") == "official"
    tiny = NCSNppConfig(image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    with pytest.raises(CheckpointError, match=r"official\.pth \('model'\) does not fit NCSNpp: missing key"):
        load_model(tmp_path / "official.pth", "cpu", network=tiny)
    with pytest.raises(CheckpointError, match=r"the score-SDE flavor 'vp' applies to official score-SDE checkpoints"):
        load_model(tmp_path / "bare.pt", "cpu", flavor="vp")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=r"garbage\.pt is not a model file rfbench can read \(.*\); expected an "
                                              r"rfbench checkpoint, an official"):
        load_model(tmp_path / "garbage.pt", "cpu")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt holds list, not a model rfbench knows"):
        load_model(tmp_path / "list.pt", "cpu")

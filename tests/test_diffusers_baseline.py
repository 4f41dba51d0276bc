"""The DDPM baseline from a diffusers UNet2DModel folder: both layouts written by diffusers itself, the schedule
against diffusers' own schedulers, the network's output through rfbench's adapter, and the errors."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rfbench.cli import main  # noqa: E402
from rfbench.models import DiffusionModel  # noqa: E402
from rfbench.models.checkpoint import CheckpointError  # noqa: E402
from rfbench.models.diffusers_folder import schedule_from_config  # noqa: E402
from rfbench.models.formats import file_identity, load_model  # noqa: E402
from rfbench.models.sources import ModelFile  # noqa: E402
from rfbench.samplers import sample  # noqa: E402


def _unet(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(16, 32), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    unet = _unet()
    # google/ddpm-cifar10-32's layout: the UNet at the top, an old-style scheduler config beside it
    unet.save_pretrained(root / "flat")
    (root / "flat" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "GaussianDDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
         "timesteps": 1000, "variance_type": "fixed_large"}))
    # DDPMPipeline.save_pretrained: unet/ and scheduler/ subfolders
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    return root, unet


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedules_match_diffusers(schedule):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03,
                                        beta_schedule=schedule, prediction_type="sample")
    betas, prediction = schedule_from_config(dict(scheduler.config), "test")
    torch.testing.assert_close(betas, scheduler.betas.double(), rtol=1e-6, atol=1e-7)
    assert prediction == "x0" and betas.dtype == torch.float64


def test_both_layouts_load_with_the_network_and_schedule(folders):
    root, unet = folders
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    steps = torch.tensor([0, 10, 100, 199])
    with torch.no_grad():
        expected = unet(x, steps).sample
        for name, n, prediction in (("flat", 1000, "eps"), ("pipeline", 200, "v")):
            model = load_model(root / name, "cpu")
            assert isinstance(model, DiffusionModel) and model.num_timesteps == n and model.prediction == prediction
            torch.testing.assert_close(model.net(x, steps), expected, rtol=0, atol=0)
    flat = load_model(root / "flat", "cpu")
    torch.testing.assert_close(flat.eps(x, steps), expected, rtol=0, atol=0)   # an eps network: eps unchanged
    ddim = sample(flat, x, "ddim", 5)
    pf_ode = sample(flat, x, "euler", 2)      # the probability-flow ODE takes fractional timesteps
    assert ddim.nfe == 5 and pf_ode.nfe == 2 and torch.isfinite(ddim.x).all() and torch.isfinite(pf_ode.x).all()
    assert file_identity(root / "flat").startswith("flat/ (sha1 ")
    assert file_identity(root / "flat") != file_identity(root / "pipeline")


def test_bad_folders_are_one_error_naming_the_file(folders, tmp_path):
    root, unet = folders
    unet.save_pretrained(tmp_path / "no-scheduler")
    with pytest.raises(CheckpointError, match=r"no-scheduler: no scheduler_config\.json"):
        load_model(tmp_path / "no-scheduler", "cpu")
    unet.save_pretrained(tmp_path / "truncated")
    (tmp_path / "truncated" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    weights = tmp_path / "truncated" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated: diffusers could not load the UNet2DModel"):
        load_model(tmp_path / "truncated", "cpu")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "odd" / "scheduler_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"_class_name is 'UNet2DConditionModel'"):
        load_model(tmp_path / "odd", "cpu")
    with pytest.raises(ValueError, match=r"flat \(diffusers UNet2DModel folder\) holds a diffusion model, not a "
                                         r"flow one"):
        ModelFile(root / "flat", kind="flow").check()
    assert ModelFile(root / "flat").kind == "diffusion" and ModelFile(root / "flat").input_shape(None) == (3, 8, 8)
    with pytest.raises(CheckpointError, match=r"beta_schedule 'sigmoid' is not supported"):
        schedule_from_config({"num_train_timesteps": 10, "beta_schedule": "sigmoid"}, "x")


def test_checkpoint_dir_finds_the_ddpm_folder(folders, tmp_path, capsys):
    root, unet = folders
    (tmp_path / "ckpts").mkdir()
    unet.save_pretrained(tmp_path / "ckpts" / "ddpm")
    with pytest.raises(SystemExit):    # the folder is ddpm's checkpoint; it lacks its scheduler: said before any work
        main(["--suite", "cifar", "--models", "ddpm", "1-rf", "--checkpoint-dir", str(tmp_path / "ckpts")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "cifar10 needs --data-dir" in err[0] and "no checkpoint for 1-rf" in err[1]
    assert "model ddpm (diffusion, from " in err[2] and "ddpm: no scheduler_config.json" in err[2]
    (tmp_path / "ckpts" / "ddpm" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    with pytest.raises(SystemExit):    # then the 8x8 test UNet does not fit CIFAR-10's 32x32 images: both shapes named
        main(["--suite", "cifar", "--models", "ddpm", "1-rf", "--checkpoint-dir", str(tmp_path / "ckpts")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "cifar10 needs --data-dir" in err[0] and "no checkpoint for 1-rf" in err[1]
    assert err[2].endswith("takes inputs of shape (B, 3, 8, 8); suite cifar's samples have shape (B, 3, 32, 32)")
    assert main(["--suite", "cifar", "--models", "ddpm", "--dry-run"]) == 2   # the plan, then what the run lacks
    shown = capsys.readouterr()
    assert "ddpm/ddim/10" in shown.out and "ddpm/ddim/100" in shown.out and "ddpm/ddpm/1000" in shown.out
    assert "cifar10 needs --data-dir" in shown.err and "no checkpoint for ddpm" in shown.err
    assert "time unknown" in shown.out and "the time of ddpm, which could not be loaded or probed" in shown.out


def test_weights_that_do_not_match_the_config_are_refused(folders, tmp_path):
    """diffusers itself only warns about missing and unexpected keys and leaves the missing ones uninitialised."""
    root, unet = folders
    from safetensors.torch import load_file, save_file
    unet.save_pretrained(tmp_path / "other")
    weights = tmp_path / "other" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state.pop("conv_out.bias")                                   # one parameter missing from the file
    save_file(state, weights, metadata={"format": "pt"})
    (tmp_path / "other" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    with pytest.raises(CheckpointError, match=r"other: the weights do not match config\.json: 1 missing keys "
                                              r"\(conv_out\.bias\)"):
        load_model(tmp_path / "other", "cpu")
    with pytest.raises(CheckpointError, match=r"scheduler 'ScoreSdeVeScheduler' has no discrete DDPM beta schedule"):
        schedule_from_config({"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 10}, "x")
    clipped = load_model(root / "pipeline", "cpu")
    assert "clip_sample" in clipped.notes     # DDPMScheduler's default clip_sample=True: the rows will say so

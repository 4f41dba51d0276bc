"""A diffusers ``UNet2DModel`` folder as a DDPM/DDIM baseline (optional: ``pip install -e ".[diffusers]"``).

The folder is what ``save_pretrained`` writes or the Hub holds, read from disk only (``local_files_only``): e.g. a
local copy of ``google/ddpm-cifar10-32``. Two layouts are accepted:

* the UNet's ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or ``.bin``) at the top, with
  ``scheduler_config.json`` beside them (google/ddpm-cifar10-32);
* a pipeline folder with ``unet/`` and ``scheduler/`` subfolders (``DDPMPipeline.save_pretrained``).

The scheduler config gives the discrete schedule (``num_train_timesteps`` or the older ``timesteps``; ``beta_start``,
``beta_end``, ``beta_schedule`` linear / scaled_linear / squaredcos_cap_v2, or ``trained_betas``) and what the
network predicts (``prediction_type`` epsilon / sample / v_prediction). The result is a
:class:`~rfbench.models.DiffusionModel`, so ddim, ddpm and the probability-flow ODE all sample it. rfbench's samplers
do not clip the predicted x0 to [-1, 1] as diffusers' pipelines do with ``clip_sample``; the model's ``notes`` say
so and the runner writes them into its rows. Weights that do not match the config (missing, unexpected or
misshapen keys, which diffusers itself only warns about) are an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rfbench.files import sha1_files
from rfbench.models.checkpoint import CheckpointError
from rfbench.models.diffusion import DiffusionModel, linear_betas

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class DiffusersUNet(torch.nn.Module):
    """``net(x, timesteps)`` over a UNet2DModel: its ``.sample`` output; float timesteps pass through unchanged."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.input_shape = (unet.config.in_channels, *size)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps).sample


def is_diffusers_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "unet" / "config.json").is_file())


def _folders(path: Path) -> tuple[Path, Path]:
    """The UNet's folder and the scheduler config file."""
    unet = path / "unet" if (path / "unet" / "config.json").is_file() else path
    for candidate in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
        if candidate.is_file():
            return unet, candidate
    raise CheckpointError(f"{path}: no scheduler_config.json (looked in {path} and {path / 'scheduler'}); the "
                          f"discrete schedule of a diffusers DDPM comes from it")


# schedulers over DDPM's discrete beta schedule (the others, e.g. ScoreSdeVeScheduler, are continuous-time)
DISCRETE_SCHEDULERS = ("DDPMScheduler", "GaussianDDPMScheduler", "DDIMScheduler", "PNDMScheduler",
                       "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                       "LMSDiscreteScheduler", "HeunDiscreteScheduler", "DEISMultistepScheduler",
                       "UniPCMultistepScheduler")


def schedule_from_config(config: dict, source: str) -> tuple[torch.Tensor, str]:
    """The betas (float64) and rfbench's prediction name from a diffusers scheduler config."""
    name = config.get("_class_name", "DDPMScheduler")
    if name not in DISCRETE_SCHEDULERS:
        raise CheckpointError(f"{source}: scheduler {name!r} has no discrete DDPM beta schedule; supported: "
                              f"{', '.join(DISCRETE_SCHEDULERS)}")
    if config.get("rescale_betas_zero_snr"):
        raise CheckpointError(f"{source}: rescale_betas_zero_snr is not supported (the rescaled schedule ends at "
                              f"alpha_bar = 0)")
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float64), _prediction(config, source)
    steps = config.get("num_train_timesteps", config.get("timesteps"))
    if not isinstance(steps, int) or steps < 2:
        raise CheckpointError(f"{source}: num_train_timesteps must be an integer >= 2, got {steps!r}")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        betas = linear_betas(steps, start, end)
    elif kind == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":   # Nichol & Dhariwal's cosine schedule, betas capped at 0.999
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
                              for i in range(steps)], dtype=torch.float64)
    else:
        raise CheckpointError(f"{source}: beta_schedule {kind!r} is not supported; supported: linear, "
                              f"scaled_linear, squaredcos_cap_v2 or trained_betas")
    return betas, _prediction(config, source)


def _prediction(config: dict, source: str) -> str:
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTIONS:
        raise CheckpointError(f"{source}: prediction_type {kind!r} is not one of {', '.join(PREDICTIONS)}")
    return PREDICTIONS[kind]


def load_diffusers_ddpm(path: str | Path, device) -> DiffusionModel:
    """The DiffusionModel of a diffusers UNet2DModel folder (weights and scheduler config), on ``device``."""
    path = Path(path)
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError(f"{path} is a diffusers folder; loading it needs the diffusers package: "
                          f"pip install -e \".[diffusers]\"") from None
    unet_dir, scheduler_file = _folders(path)
    try:
        config = json.loads((unet_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{unet_dir / 'config.json'}: not a readable JSON config ({exc})") from None
    if config.get("_class_name") != "UNet2DModel":
        raise CheckpointError(f"{unet_dir / 'config.json'}: _class_name is {config.get('_class_name')!r}; rfbench "
                              f"loads unconditional UNet2DModel folders")
    if not any((unet_dir / name).is_file() for name in WEIGHTS):
        raise CheckpointError(f"{unet_dir}: no weights file ({' or '.join(WEIGHTS)})")
    try:
        scheduler = json.loads(scheduler_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{scheduler_file}: not a readable JSON config ({exc})") from None
    betas, prediction = schedule_from_config(scheduler, str(scheduler_file))
    if config.get("time_embedding_type", "positional") != "positional":
        raise CheckpointError(f"{unet_dir / 'config.json'}: time_embedding_type "
                              f"{config.get('time_embedding_type')!r} is a continuous-time (score-SDE) UNet; the DDPM "
                              f"baseline takes discrete timesteps (positional)")
    try:
        unet, info = UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False,
                                                 output_loading_info=True)
    except Exception as exc:
        raise CheckpointError(f"{unet_dir}: diffusers could not load the UNet2DModel: {type(exc).__name__}: "
                              f"{exc}") from None
    # diffusers only warns about missing and unexpected keys (the missing ones stay uninitialised): refuse them
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(kind):
            shown = ", ".join(map(str, list(info[kind])[:5])) + (" ..." if len(info[kind]) > 5 else "")
            raise CheckpointError(f"{unet_dir}: the weights do not match config.json: {len(info[kind])} "
                                  f"{kind.replace('_', ' ')} ({shown})")
    net = DiffusersUNet(unet).to(device).eval()
    model = DiffusionModel(net, betas, prediction=prediction)
    if scheduler.get("clip_sample") or scheduler.get("thresholding"):
        model.notes = ("sampled without the scheduler's clip_sample/thresholding (rfbench does not clip the "
                       "predicted x0)")
    return model


def folder_input_shape(path: str | Path) -> tuple[int, int, int]:
    """(in_channels, H, W) from the UNet's config.json, without loading its weights."""
    unet_dir, _ = _folders(Path(path))
    try:
        config = json.loads((unet_dir / "config.json").read_text())
        size = config["sample_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(config["in_channels"]), *map(int, size))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{unet_dir / 'config.json'}: no in_channels and sample_size ({exc})") from None


def folder_sha1(path: str | Path) -> str:
    """SHA-1 over the folder's UNet config, scheduler config and weights."""
    unet_dir, scheduler_file = _folders(Path(path))
    files = [f for f in (unet_dir / "config.json", scheduler_file, *(unet_dir / n for n in WEIGHTS)) if f.is_file()]
    return sha1_files(*files)


def folder_identity(path: str | Path) -> str:
    """``name (sha1 prefix)`` over the folder's configs and weights, for the ``model_checkpoint`` column."""
    return f"{Path(path).name}/ (sha1 {folder_sha1(path)[:12]})"

"""Models loaded from checkpoint files instead of trained: the published rectified-flow and score-SDE CIFAR-10
checkpoints (official score_sde format, network NCSN++ as DDPM++), and rfbench's own checkpoints.

A suite names the file of a model with ``Suite.checkpoints`` (``--checkpoint MODEL=PATH`` / ``--checkpoint-dir``);
the runner then calls :func:`load_checkpoint_model` instead of training. How a file becomes a sampler:

* ``1-rf``, ``2-rf``, ``3-rf`` (flows) and ``2-rf-distill``, ``3-rf-distill`` (one step): gnobitab/RectifiedFlow's
  files, EMA weights, wrapped in :class:`~rfbench.models.score_sde.TimeWindowFlow` (t in [1e-3, 1], labels t*999);
* ``vp-ode``, ``subvp-ode``: score-SDE's continuous VP / sub-VP DDPM++ files, sampled through their probability-flow
  ODE (:class:`~rfbench.models.score_sde.VPSDEFlow`);
* ``ddpm``: a diffusers ``UNet2DModel`` folder (e.g. a local copy of google/ddpm-cifar10-32) with its scheduler
  config, sampled by ddim, ddpm or its probability-flow ODE (:mod:`baselines.diffusers_unet`; needs diffusers);
* any of them as an rfbench checkpoint (``format: rfbench-checkpoint``, written by rfbench's cache): rebuilt from
  the config inside the file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from baselines import BASELINES, Baseline
from baselines.diffusers_unet import folder_identity, is_diffusers_folder, load_diffusers_ddpm
from rfbench.models import (DiffusionModel, MLPConfig, UNetConfig, build_network, linear_betas, load_state_dict_strict,
                            read_checkpoint)
from rfbench.models.checkpoint import FORMAT, CheckpointError, sha1_files
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig, load_score_sde_checkpoint
from rfbench.models.score_sde import TimeWindowFlow, VPSDEFlow

RF_T_MIN = 1e-3
# suite name -> the network of its official checkpoints (the published CIFAR-10 DDPM++; dropout is inactive)
NETWORKS: dict[str, NCSNppConfig] = {"cifar": NCSNppConfig(dropout=0.15)}
OFFICIAL = {"1-rf": "rf", "2-rf": "rf", "3-rf": "rf", "2-rf-distill": "rf", "3-rf-distill": "rf",
            "vp-ode": "vp", "subvp-ode": "subvp"}
CONFIG_TYPES = {"MLPConfig": MLPConfig, "UNetConfig": UNetConfig, "NCSNppConfig": NCSNppConfig}


def file_identity(path: str | Path) -> str:
    """``name (sha1 prefix)`` of a checkpoint file (or diffusers folder), for the ``model_checkpoint`` column."""
    if Path(path).is_dir():
        return folder_identity(path)
    return f"{Path(path).name} (sha1 {sha1_files(path)[:12]})"


def _is_rfbench_file(path: Path) -> bool:
    """Only the pickled structure is read: mmap leaves the tensor data (hundreds of MB for DDPM++) on disk until the
    real load. A file torch cannot memory-map (the pre-1.6 format) is not one of ours."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def _rfbench_model(path: Path, device):
    """A flow or DiffusionModel rebuilt from an rfbench checkpoint's own config."""
    payload = read_checkpoint(path)
    spec = payload["config"].get("net") if isinstance(payload.get("config"), dict) else None
    if not isinstance(spec, dict) or spec.get("arch") not in CONFIG_TYPES:
        raise CheckpointError(f"{path}: an rfbench checkpoint without a network spec ('config.net.arch' one of "
                              f"{', '.join(CONFIG_TYPES)}); was it written by rfbench's model cache?")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "arch"}
    net = build_network(CONFIG_TYPES[spec["arch"]](**fields))
    load_state_dict_strict(net, payload["state_dict"], source=str(path))
    net = net.to(device).eval()
    config = payload["config"]
    if config.get("family") == "ddpm":
        betas = linear_betas(config["num_timesteps"], config["beta_start"], config["beta_end"])
        return DiffusionModel(net, betas, prediction="eps")
    return net


def load_checkpoint_model(model_name: str, path: str | Path, suite, device):
    """The sampler-ready model ``model_name`` of ``suite`` from ``path`` (official format or rfbench's)."""
    path = Path(path)
    if path.is_dir():
        if BASELINES[model_name].kind != "diffusion" or not is_diffusers_folder(path):
            raise CheckpointError(f"{path} is a folder: only a diffusion model (ddpm) loads from one, a diffusers "
                                  f"UNet2DModel folder with config.json (or unet/config.json); {model_name} "
                                  f"takes a checkpoint file")
        return load_diffusers_ddpm(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint for {model_name} not found: {path}")
    if _is_rfbench_file(path):
        return _rfbench_model(path, device)
    if model_name not in OFFICIAL:
        raise CheckpointError(f"{path} is not an rfbench checkpoint, and {model_name} has no official format "
                              f"(official checkpoints exist for: {', '.join(OFFICIAL)})")
    try:
        config = NETWORKS[suite.name]
    except KeyError:
        raise KeyError(f"no checkpoint network for suite {suite.name!r}; known: {', '.join(NETWORKS)}") from None
    net = NCSNpp(config)
    load_score_sde_checkpoint(path, net, use_ema=True)
    net = net.to(device).eval()
    kind = OFFICIAL[model_name]
    if kind == "rf":
        return TimeWindowFlow(net, RF_T_MIN).eval()
    return VPSDEFlow(net.forward_labels, sub_vp=kind == "subvp").eval()


def _checkpoint_only(name: str):
    def load(suite, cache, device):
        raise FileNotFoundError(f"{name} is loaded from a checkpoint file, not trained: pass --checkpoint "
                                f"{name}=PATH or put {name}.pth in --checkpoint-dir")
    return load


BASELINES.add("vp-ode", Baseline("vp-ode", "flow", "score-SDE VP DDPM++ (continuous), probability-flow ODE",
                                 _checkpoint_only("vp-ode")))
BASELINES.add("subvp-ode", Baseline("subvp-ode", "flow", "score-SDE sub-VP DDPM++ (continuous), probability-flow ODE",
                                    _checkpoint_only("subvp-ode")))

"""Models: the DDPM-style adapter, the toy MLP, the image U-Net, and checkpoint I/O."""

from dataclasses import asdict

from rfbench.models.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_strict, read_checkpoint,
                                       save_checkpoint)
from rfbench.models.diffusion import PREDICTIONS, DiffusionModel, alphas_cumprod, linear_betas
from rfbench.models.mlp import MLP, MLPConfig
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
from rfbench.models.unet import UNet, UNetConfig

NETWORKS = {MLPConfig: MLP, UNetConfig: UNet, NCSNppConfig: NCSNpp}


def build_network(config: "MLPConfig | UNetConfig | NCSNppConfig"):
    """The network a config describes (an MLP for the 2D suites, a U-Net or DDPM++ for images)."""
    try:
        return NETWORKS[type(config)](config)
    except KeyError:
        raise TypeError(f"no network for config type {type(config).__name__}; known: "
                        f"{', '.join(c.__name__ for c in NETWORKS)}") from None


def network_spec(config: "MLPConfig | UNetConfig") -> dict:
    """A config as a plain dict that names its architecture (for cache keys and checkpoint files)."""
    return {"arch": type(config).__name__, **asdict(config)}

__all__ = ["DiffusionModel", "linear_betas", "alphas_cumprod", "PREDICTIONS", "MLP", "MLPConfig", "UNet", "UNetConfig", "NCSNpp", "NCSNppConfig", "build_network", "network_spec", "CheckpointError",
           "save_checkpoint", "load_checkpoint", "read_checkpoint", "load_state_dict_strict"]

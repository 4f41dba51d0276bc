"""Models: the DDPM-style adapter, the networks (toy MLP, image U-Net, DDPM++, EDM's SongUNet and ADM), checkpoint I/O,
models from files of other codebases (EDM's network pickles among them, read without running them), and model
sources (what a suite's model is: a recipe trained by rfbench, a file, a factory)."""

from rfbench.models.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_strict, read_checkpoint,
                                       save_checkpoint)
from rfbench.models.diffusion import PREDICTIONS, DiffusionModel, alphas_cumprod, linear_betas
from rfbench.models.mlp import MLP, MLPConfig
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig
from rfbench.models.networks import build_network, network_input_shape, network_spec
from rfbench.models.unet import UNet, UNetConfig

__all__ = ["DiffusionModel", "linear_betas", "alphas_cumprod", "PREDICTIONS", "MLP", "MLPConfig", "UNet",
           "UNetConfig", "NCSNpp", "NCSNppConfig", "build_network", "network_spec",
           "network_input_shape",
           "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "load_state_dict_strict"]

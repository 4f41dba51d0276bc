"""Models: the DDPM-style adapter, the toy MLP, and checkpoint I/O."""

from rfbench.models.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_strict, read_checkpoint,
                                       save_checkpoint)
from rfbench.models.diffusion import PREDICTIONS, DiffusionModel, alphas_cumprod, linear_betas
from rfbench.models.mlp import MLP, MLPConfig

__all__ = ["DiffusionModel", "linear_betas", "alphas_cumprod", "PREDICTIONS", "MLP", "MLPConfig", "CheckpointError",
           "save_checkpoint", "load_checkpoint", "read_checkpoint", "load_state_dict_strict"]

"""NCSN++ configured as DDPM++ (Song et al. 2021), the network of the published rectified-flow CIFAR-10 checkpoints
(gnobitab/RectifiedFlow, ``configs/rectified_flow/cifar10_rf_gaussian_ddpmpp.py``) and of score-SDE's VP and sub-VP
DDPM++ checkpoints (``configs/{vp,subvp}/cifar10_ddpmpp_continuous.py``).

Every published CIFAR-10 DDPM++ file uses one variant, and only that variant is built here: BigGAN residual blocks
(resampling inside the block, no FIR filter), skip connections rescaled by 1/sqrt(2), DDPM attention, positional
(sinusoidal) time embedding, no progressive growing, ``init_scale = 0``. The module tree and parameter names are
those of score_sde's ``NCSNpp`` (one ``all_modules`` list, blocks with ``GroupNorm_0``, ``Conv_0``, ``Dense_0``,
``NIN_0`` ...) so that the official state_dicts load with ``strict=True``; see :func:`load_score_sde_checkpoint`.

``net(x, t)`` takes t in [0, 1] and feeds ``t * time_scale`` (999, as both codebases do for these models) to the
embedding; :meth:`NCSNpp.forward_labels` takes the labels directly, as the official ``forward(x, time_cond)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rfbench.models.checkpoint import CheckpointError, load_state_dict_strict


@dataclass(frozen=True)
class NCSNppConfig:
    """Defaults: the published CIFAR-10 DDPM++ (nf 128, (1, 2, 2, 2), 4 blocks, attention at 16; 61.8M parameters)."""

    image_size: int = 32
    in_channels: int = 3
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1          # 0.15 in the rectified-flow config, 0.1 in score-SDE's; inactive when sampling
    num_scales: int = 1000        # the official model keeps an (unused for DDPM++) ``sigmas`` buffer of this length
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    centered: bool = True         # inputs in [-1, 1]; False: [0, 1] inputs are mapped to [-1, 1] first
    time_scale: float = 999.0     # labels = t * time_scale

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        for name in ("image_size", "in_channels", "nf", "num_res_blocks", "num_scales"):
            if getattr(self, name) < 1:
                raise ValueError(f"NCSNppConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.nf % 8:
            raise ValueError(f"NCSNppConfig.nf must be a multiple of 8 (group norm uses min(channels // 4, 32) "
                             f"groups), got {self.nf}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"NCSNppConfig.ch_mult must be positive integers, got {self.ch_mult}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"NCSNppConfig: image_size {self.image_size} must be divisible by "
                             f"2**(len(ch_mult) - 1) = {2 ** (len(self.ch_mult) - 1)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def _conv(cin: int, cout: int, kernel: int, init_scale: float = 1.0) -> nn.Conv2d:
    """DDPM's initialisation: variance scaling (fan_avg, uniform), zero bias; init_scale 0 means 1e-10."""
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    _ddpm_init(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _ddpm_init(weight: torch.Tensor, scale: float = 1.0) -> None:
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    limit = math.sqrt(3 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        weight.uniform_(-limit, limit)


def positional_embedding(labels: torch.Tensor, dim: int, max_positions: int = 10_000) -> torch.Tensor:
    """score_sde's ``get_timestep_embedding``: frequencies exp(-log(10000) * i / (dim/2 - 1)), [sin, cos]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=labels.device)
                      * -(math.log(max_positions) / (half - 1)))
    angles = labels.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class NIN(nn.Module):
    """A 1x1 linear map over channels with score_sde's parameter layout: W (in, out), b (out)."""

    def __init__(self, cin: int, cout: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(torch.empty(cin, cout))
        self.b = nn.Parameter(torch.zeros(cout))
        _ddpm_init(self.W.T, init_scale)   # fan in/out as the original (in_axis=1, out_axis=0 of W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class AttnBlockpp(nn.Module):
    """Self-attention over the H*W positions, one head, skip rescaled by 1/sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q, k, v = (m(hn).reshape(b, c, h * w).transpose(1, 2)[:, None] for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, h, w)  # scale C^-1/2
        return (x + self.NIN_3(out)) / math.sqrt(2.0)


class ResnetBlockBigGANpp(nn.Module):
    """GroupNorm-SiLU-(resample)-conv, + time embedding, GroupNorm-SiLU-dropout-conv; 1x1 skip when the shape
    changes; resampling is nearest-neighbour up or 2x2 average down (FIR off), applied to both paths."""

    def __init__(self, cin: int, cout: int | None, temb_dim: int, dropout: float, up: bool = False,
                 down: bool = False):
        super().__init__()
        cout = cout or cin
        self.up, self.down = up, down
        self.GroupNorm_0 = _group_norm(cin)
        self.Conv_0 = _conv(cin, cout, 3)
        self.Dense_0 = nn.Linear(temb_dim, cout)
        _ddpm_init(self.Dense_0.weight)
        nn.init.zeros_(self.Dense_0.bias)
        self.GroupNorm_1 = _group_norm(cout)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(cout, cout, 3, init_scale=0.0)
        if cin != cout or up or down:
            self.Conv_2 = _conv(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0)


class NCSNpp(nn.Module):
    """DDPM++: x (B, C, H, W), t (B,) in [0, 1] (or a scalar) -> (B, C, H, W)."""

    def __init__(self, config: NCSNppConfig = NCSNppConfig()):
        super().__init__()
        self.config = config
        self.input_shape = (config.in_channels, config.image_size, config.image_size)
        nf, temb = config.nf, 4 * config.nf
        sigmas = np.exp(np.linspace(np.log(config.sigma_max), np.log(config.sigma_min), config.num_scales))
        self.register_buffer("sigmas", torch.tensor(sigmas))   # float64, as the official model registers it

        def block(cin, cout=None, **kw):
            return ResnetBlockBigGANpp(cin, cout, temb, config.dropout, **kw)

        resolutions = [config.image_size // 2 ** i for i in range(len(config.ch_mult))]
        modules: list[nn.Module] = [nn.Linear(nf, temb), nn.Linear(temb, temb)]
        for linear in modules:
            _ddpm_init(linear.weight)
            nn.init.zeros_(linear.bias)
        modules.append(_conv(config.in_channels, nf, 3))
        skips, width = [nf], nf
        for level, mult in enumerate(config.ch_mult):
            for _ in range(config.num_res_blocks):
                modules.append(block(width, nf * mult))
                width = nf * mult
                if resolutions[level] in config.attn_resolutions:
                    modules.append(AttnBlockpp(width))
                skips.append(width)
            if level != len(config.ch_mult) - 1:
                modules.append(block(width, down=True))
                skips.append(width)
        modules += [block(width), AttnBlockpp(width), block(width)]
        for level, mult in reversed(list(enumerate(config.ch_mult))):
            for _ in range(config.num_res_blocks + 1):
                modules.append(block(width + skips.pop(), nf * mult))
                width = nf * mult
            if resolutions[level] in config.attn_resolutions:
                modules.append(AttnBlockpp(width))
            if level != 0:
                modules.append(block(width, up=True))
        assert not skips
        modules += [_group_norm(width), _conv(width, config.in_channels, 3, init_scale=0.0)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.shape[0] == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        return self.forward_labels(x, t * self.config.time_scale)

    def forward_labels(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The official ``NCSNpp.forward(x, time_cond)``: labels are the embedding's input (t * 999)."""
        cfg, mods = self.config, iter(self.all_modules)
        temb = next(mods)(positional_embedding(labels, cfg.nf).to(x.dtype))
        temb = next(mods)(F.silu(temb))
        if not cfg.centered:
            x = 2 * x - 1.0
        hs = [next(mods)(x)]
        for level in range(len(cfg.ch_mult)):
            for _ in range(cfg.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in cfg.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level != len(cfg.ch_mult) - 1:
                hs.append(next(mods)(hs[-1], temb))
        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        for level in reversed(range(len(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in cfg.attn_resolutions:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h, temb)
        h = F.silu(next(mods)(h))
        h = next(mods)(h)
        assert next(mods, None) is None and not hs
        return h


# -- the official checkpoint format ---------------------------------------------------------------------------------

def read_score_sde_checkpoint(path: str | Path) -> dict:
    """The dict of a score_sde-style checkpoint (``model``, ``ema``, ``optimizer``, ``step``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(payload, dict) or "model" not in payload:
        found = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a score_sde-style checkpoint: expected a dict with keys 'model', "
                              f"'ema', 'optimizer', 'step'; found {found}")
    return payload


def _strip_module(state: dict, path: Path) -> dict:
    prefixed = [k.startswith("module.") for k in state]
    if any(prefixed) and not all(prefixed):
        odd = next(k for k, p in zip(state, prefixed) if not p)
        raise CheckpointError(f"{path}: 'model' mixes keys with and without the DataParallel prefix 'module.' "
                              f"(e.g. {odd!r})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_score_sde_checkpoint(path: str | Path, net: NCSNpp, use_ema: bool = True) -> dict:
    """Load an official rectified-flow or score-SDE checkpoint into ``net`` and return its dict.

    The ``model`` state_dict (``module.``-prefixed from DataParallel, or not) must fit ``net`` exactly: a missing,
    unexpected or misshapen key is an error naming it (the official loader uses ``strict=False``, which would
    silently leave weights at their initial values). With ``use_ema`` (default), the EMA weights are then copied
    in: ``ema.shadow_params`` is a list aligned with the parameters that require grad, in ``net.parameters()``
    order; a length or shape mismatch is an error naming the parameter.
    """
    path = Path(path)
    payload = read_score_sde_checkpoint(path)
    state = _strip_module(payload["model"], path)
    load_state_dict_strict(net, state, source=f"{path} ('model')")
    if use_ema:
        ema = payload.get("ema")
        if not isinstance(ema, dict) or "shadow_params" not in ema:
            raise CheckpointError(f"{path} has no EMA weights ('ema' with 'shadow_params'); pass use_ema=False to "
                                  f"use the raw 'model' weights")
        named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        shadow = ema["shadow_params"]
        if len(shadow) != len(named):
            raise CheckpointError(f"{path}: 'ema.shadow_params' has {len(shadow)} tensors, the model has "
                                  f"{len(named)} trainable parameters")
        for (name, param), value in zip(named, shadow):
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{path}: 'ema.shadow_params' entry for {name!r} has shape "
                                      f"{tuple(value.shape)}, the model expects {tuple(param.shape)}")
        with torch.no_grad():
            for (_, param), value in zip(named, shadow):
                param.copy_(value)
    return payload

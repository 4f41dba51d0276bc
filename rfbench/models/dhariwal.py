"""ADM, the U-Net of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs on Image Synthesis", openai/guided-diffusion),
as EDM configures it (NVlabs/edm's ``DhariwalUNet``: its ImageNet-64 network and its iDDPM / ADM baselines).

rfbench's own code, written from the paper and the constructor arguments, on the layers of
:mod:`rfbench.models.songunet`, with EDM's module tree and parameter names so that an EDM pickle's state loads with
strict key and shape checks. What sets it apart from DDPM++: the embedding of the noise label is sinusoidal with
cosines first (no endpoint), class labels are projected into the embedding after its second layer, every residual
block modulates with scale and shift (``adaptive_scale``), keeps GroupNorm's eps at 1e-5 and does not rescale its
skip, resamples its skip path without a projection, and attends with one head per 64 channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rfbench.models.songunet import (Conv2d, GroupNorm, Linear, PositionalEmbedding, UNetArgs, UNetBlock,
                                      enter_level)

CHANNELS_PER_HEAD = 64


@dataclass(frozen=True)
class DhariwalUNetConfig(UNetArgs):
    """EDM's ``DhariwalUNet`` constructor arguments, with its defaults (ADM at 64x64)."""

    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    channel_mult_emb: int = 4
    num_blocks: int = 3
    attn_resolutions: tuple[int, ...] = (32, 16, 8)
    dropout: float = 0.10
    label_dropout: float = 0

    def __post_init__(self):
        self.check("DhariwalUNet", ("channel_mult", "attn_resolutions"), ())


class DhariwalUNet(nn.Module):
    """ADM: ``forward(x, noise_labels, class_labels)`` with x (B, C, H, W), noise_labels (B,) and class_labels
    (B or 1, label_dim; required when label_dim > 0: one-hot, or all zero for none) -> (B, out_channels, H, W).
    Encoder levels at resolutions img_resolution / 2^level with ``num_blocks`` blocks each (attention at
    ``attn_resolutions``), a downsampling block between levels; the decoder mirrors it with one block more per level,
    each fed the matching encoder output."""

    def __init__(self, config: DhariwalUNetConfig):
        super().__init__()
        cfg = self.config = config
        self.label_dropout = cfg.label_dropout
        emb_channels = cfg.model_channels * cfg.channel_mult_emb

        def block(cin, cout, attention=False, **kw):
            return UNetBlock(cin, cout, emb_channels, attention=attention, num_heads=cout // CHANNELS_PER_HEAD,
                             dropout=cfg.dropout, skip_scale=1.0, eps=1e-5, resample_proj=False,
                             adaptive_scale=True, **kw)

        self.map_noise = PositionalEmbedding(cfg.model_channels, endpoint=False, sin_first=False)
        self.map_augment = (Linear(cfg.augment_dim, cfg.model_channels, bias=False) if cfg.augment_dim else None)
        self.map_layer0 = Linear(cfg.model_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)
        self.map_label = Linear(cfg.label_dim, emb_channels, bias=False) if cfg.label_dim else None

        self.enc = nn.ModuleDict()
        width = cfg.in_channels
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(width, cfg.model_channels * mult, 3)
                width = cfg.model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = block(width, width, down=True)
            for idx in range(cfg.num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(width, cfg.model_channels * mult,
                                                            attention=res in cfg.attn_resolutions)
                width = cfg.model_channels * mult
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            enter_level(self.dec, res, level == len(cfg.channel_mult) - 1, width, block)
            for idx in range(cfg.num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = block(width + skips.pop(), cfg.model_channels * mult,
                                                            attention=res in cfg.attn_resolutions)
                width = cfg.model_channels * mult
        self.out_norm = GroupNorm(width)
        self.out_conv = Conv2d(width, cfg.out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = F.silu(self.map_layer0(self.map_noise(noise_labels)))
        emb = self.map_layer1(emb)
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        emb = F.silu(emb)

        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:      # a block that takes the encoder's output beside x
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))

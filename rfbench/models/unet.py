"""A compact U-Net with a time embedding, DDPM++-style (Song et al. 2021, NCSN++ configured as DDPM++): residual
blocks with group norm and a time-embedding shift, skip connections rescaled by 1/sqrt(2), self-attention at low
resolution. Sized by :class:`UNetConfig` so that the digits models train on a 2-core CPU in minutes.

``net(x, t) -> tensor like x`` with x (B, C, H, W) and t (B,) (or a scalar / (1,) broadcast over the batch).
The network embeds ``t * time_scale``: 999 for flows with t in [0, 1] (as the rectified-flow code feeds its
DDPM++ t * 999), 1 for DDPM timesteps in [0, T).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 8
    in_channels: int = 1
    channels: int = 32                          # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2)      # one level per entry; each level after the first halves H and W
    num_res_blocks: int = 1                     # residual blocks per level (the decoder has one more, as in DDPM)
    attn_resolutions: tuple[int, ...] = (4,)    # feature-map sizes with self-attention
    dropout: float = 0.0
    time_scale: float = 999.0
    groups: int = 8                             # group-norm groups

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        for name in ("image_size", "in_channels", "channels", "num_res_blocks", "groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.channels % 2:
            raise ValueError(f"UNetConfig.channels must be even (the sinusoidal time embedding has channels/2 "
                             f"frequencies), got {self.channels}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"UNetConfig.channel_mult must be positive integers, got {self.channel_mult}")
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"UNetConfig: image_size {self.image_size} must be divisible by "
                             f"2**(len(channel_mult) - 1) = {2 ** (len(self.channel_mult) - 1)}")
        for mult in self.channel_mult:
            if (self.channels * mult) % self.groups:
                raise ValueError(f"UNetConfig: channels*mult = {self.channels * mult} must be divisible by "
                                 f"groups = {self.groups}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of the transformer / DDPM positional encoding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)   # each block starts as the identity (DDPM++'s init_scale=0)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2)


class AttnBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)   # (B, HW, C) each
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)


class UNet(nn.Module):
    """x (B, C, H, W), t (B,) -> (B, C, H, W)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        self.input_shape = (config.in_channels, config.image_size, config.image_size)
        ch, groups, temb = config.channels, config.groups, 4 * config.channels
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, width, res = [ch], ch, config.image_size
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                blocks = [ResBlock(width, ch * mult, temb, groups, config.dropout)]
                width = ch * mult
                if res in config.attn_resolutions:
                    blocks.append(AttnBlock(width, groups))
                self.down.append(nn.ModuleList(blocks))
                skips.append(width)
            if level < len(config.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(width, width, 3, stride=2, padding=1)]))
                skips.append(width)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(width, width, temb, groups, config.dropout), AttnBlock(width, groups),
                                  ResBlock(width, width, temb, groups, config.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for _ in range(config.num_res_blocks + 1):
                blocks = [ResBlock(width + skips.pop(), ch * mult, temb, groups, config.dropout)]
                width = ch * mult
                if res in config.attn_resolutions:
                    blocks.append(AttnBlock(width, groups))
                self.up.append(nn.ModuleList(blocks))
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(width, width, 3, padding=1)]))
                res *= 2
        assert not skips
        self.norm_out = nn.GroupNorm(groups, width)
        self.conv_out = nn.Conv2d(width, config.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.shape[0] == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        emb = self.temb(timestep_embedding(t * self.config.time_scale, self.config.channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            h = self._run_blocks(blocks, h, emb)
            hs.append(h)
        h = self._run_blocks(self.mid, h, emb)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run_blocks(blocks, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return h

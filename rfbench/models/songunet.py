"""Song et al.'s U-Net in its DDPM++ and NCSN++ variants (:class:`SongUNet`) as EDM configures it (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", NVlabs/edm), and the layers EDM's networks share
(ADM's :class:`~rfbench.models.dhariwal.DhariwalUNet` uses them too). The preconditionings around these networks
are in :mod:`rfbench.models.edm_precond`.

The module tree and the names of parameters and buffers are those of EDM's networks, so that a state read from an
EDM pickle (:mod:`rfbench.models.edm`) loads with strict key and shape checks, and every layer keeps the attributes
under which EDM's pickles record its constructor arguments (``num_groups``, ``eps``, ``num_heads``, ``skip_scale``,
``up``, ``down`` ...), which the reader compares with the file's. The code is rfbench's own, written from the papers
and the constructor arguments. Every layer computes in its input's dtype (weights cast to it), so a network runs in
float16 when given float16 input, as EDM's ``use_fp16`` networks do on CUDA; attention's softmax runs in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

EMBEDDINGS = ("positional", "fourier")
ENCODERS = ("standard", "skip", "residual")
DECODERS = ("standard", "skip")


@dataclass(frozen=True)
class UNetArgs:
    """The constructor arguments every EDM network takes from its preconditioning (image size, channels in and out,
    label and augmentation dimensions), and the checks of its own that both networks share."""

    img_resolution: int
    in_channels: int
    out_channels: int
    label_dim: int = 0
    augment_dim: int = 0

    def check(self, network: str, lists: tuple[str, ...], positive: tuple[str, ...]) -> None:
        """``lists`` made tuples, label_dim and augment_dim >= 0, the widths and ``positive`` >= 1."""
        for name in lists:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("label_dim", "augment_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{network} {name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("img_resolution", "in_channels", "out_channels", "model_channels", "num_blocks",
                     "channel_mult_emb") + positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{network} {name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"{network} channel_mult must be positive integers, got {list(self.channel_mult)}")


@dataclass(frozen=True)
class SongUNetConfig(UNetArgs):
    """EDM's ``SongUNet`` constructor arguments, with its defaults (DDPM++ at 32x32)."""

    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.10
    label_dropout: float = 0
    embedding_type: str = "positional"
    channel_mult_noise: int = 1
    encoder_type: str = "standard"
    decoder_type: str = "standard"
    resample_filter: tuple[int, ...] = (1, 1)

    def __post_init__(self):
        self.check("SongUNet", ("channel_mult", "attn_resolutions", "resample_filter"), ("channel_mult_noise",))
        for name, allowed in (("embedding_type", EMBEDDINGS), ("encoder_type", ENCODERS),
                              ("decoder_type", DECODERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SongUNet {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not self.resample_filter or sum(self.resample_filter) == 0:
            raise ValueError(f"SongUNet resample_filter must be a non-empty filter with a non-zero sum, got "
                             f"{list(self.resample_filter)}")


def _group_norm_groups(channels: int) -> int:
    return min(32, channels // 4)


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """A square convolution (``kernel`` 0: none, resampling only) after 2x up- or downsampling by the separable
    filter f f^T / (sum f)^2 (a transposed convolution of stride 2 with 4 f f^T / (sum f)^2 up, a strided one down).
    ``fused_resample`` (down only): the convolution first, at full resolution, then the filtered downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: tuple[int, ...] = (1, 1), fused_resample: bool = False):
        super().__init__()
        if up and down:
            raise ValueError("Conv2d: up and down exclude each other")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None] if up or down
                             else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.out_channels, 1, 1, 1), groups=self.out_channels, stride=2)
        elif self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (4 * f).tile(self.in_channels, 1, 1, 1), groups=self.in_channels, stride=2,
                                   padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        else:
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).tile(self.in_channels, 1, 1, 1), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(self.in_channels, 1, 1, 1), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x


class GroupNorm(nn.Module):
    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups, self.eps = _group_norm_groups(num_channels), eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """A residual block (DDPM++ / NCSN++, Song et al. 2021; ADM, Dhariwal & Nichol 2021): GroupNorm-SiLU-conv
    (resampling in the conv), the embedding added (``adaptive_scale``: ADM's scale and shift, norm(h) (1 + scale) +
    shift), GroupNorm-SiLU-(dropout)-conv, plus the input (projected by a 1x1 conv when the widths differ or, with
    ``resample_proj``, when it is resampled; else only resampled), times ``skip_scale``; then, with ``attention``,
    ``num_heads``-head self-attention over the H*W positions with its own skip, times ``skip_scale`` again."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int = 1, dropout: float = 0.0,
                 skip_scale: float = math.sqrt(0.5), eps: float = 1e-6, resample_filter: tuple[int, ...] = (1, 1),
                 resample_proj: bool = True, adaptive_scale: bool = False):
        super().__init__()
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        self.num_heads = num_heads if attention else 0
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        self.norm0 = GroupNorm(in_channels, eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps)
            self.qkv = Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (x if self.skip is None else self.skip(x))) * self.skip_scale
        if not self.num_heads:
            return x
        b, c, hh, ww = x.shape
        heads = self.num_heads
        # qkv's channels are grouped per head, then per channel, then (q, k, v); the softmax runs in float32
        q, k, v = self.qkv(self.norm2(x)).reshape(b * heads, c // heads, 3, hh * ww).unbind(2)
        k = (k / math.sqrt(k.shape[1])).float()
        weights = torch.einsum("ncq,nck->nqk", q.float(), k).softmax(dim=2)
        attended = torch.einsum("nqk,nck->ncq", weights.to(q.dtype), v)
        return (self.proj(attended.reshape(b, c, hh, ww)) + x) * self.skip_scale


def enter_level(dec: nn.ModuleDict, res: int, coarsest: bool, width: int, block) -> None:
    """The first blocks of a decoder level (EDM's U-Nets): at the coarsest, two of the encoder's width (the first
    attends); at the others, one that upsamples. ``block(in, out, **kw)`` makes a :class:`UNetBlock`."""
    if coarsest:
        dec[f"{res}x{res}_in0"] = block(width, width, attention=True)
        dec[f"{res}x{res}_in1"] = block(width, width)
    else:
        dec[f"{res}x{res}_up"] = block(width, width, up=True)


class PositionalEmbedding(nn.Module):
    """Sinusoidal features of the noise label: frequencies (1 / max_positions)^(i / (C/2 - 1)) (``endpoint``, else
    i / (C/2)); the sines first (DDPM++) or the cosines first (``sin_first=False``: ADM)."""

    def __init__(self, num_channels: int, max_positions: int = 10_000, endpoint: bool = True,
                 sin_first: bool = True):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint
        self.sin_first = sin_first

    def frequencies(self, device) -> torch.Tensor:
        half = self.num_channels // 2
        exponent = torch.arange(half, dtype=torch.float32, device=device) / (half - (1 if self.endpoint else 0))
        return (1 / self.max_positions) ** exponent

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(labels, self.frequencies(labels.device).to(labels.dtype))
        pair = [angles.sin(), angles.cos()]
        return torch.cat(pair if self.sin_first else pair[::-1], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++): sin and cos of 2 pi freqs * label."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.register_buffer("freqs", torch.zeros(num_channels // 2))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(labels, (2 * math.pi * self.freqs).to(labels.dtype))
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ (Song et al. 2021) as EDM configures them: ``forward(x, noise_labels, class_labels)`` with x
    (B, C, H, W) and noise_labels (B,) -> (B, out_channels, H, W). Encoder levels at resolutions img_resolution /
    2^level, each with ``num_blocks`` blocks (attention at ``attn_resolutions``); the decoder mirrors it with one
    block more per level, fed the encoder's outputs; ``encoder_type`` "skip" / "residual" and ``decoder_type`` "skip"
    add the progressive input / output paths of NCSN++. ``class_labels`` (B or 1, label_dim) are required when
    label_dim > 0 (one-hot, or all zero for none)."""

    def __init__(self, config: SongUNetConfig):
        super().__init__()
        cfg = self.config = config
        self.label_dropout = cfg.label_dropout
        emb_channels = cfg.model_channels * cfg.channel_mult_emb
        noise_channels = cfg.model_channels * cfg.channel_mult_noise
        filt = cfg.resample_filter

        def block(cin, cout, **kw):
            return UNetBlock(cin, cout, emb_channels, dropout=cfg.dropout, resample_filter=filt, **kw)

        self.map_noise = (PositionalEmbedding(noise_channels) if cfg.embedding_type == "positional"
                          else FourierEmbedding(noise_channels))
        self.map_label = Linear(cfg.label_dim, noise_channels) if cfg.label_dim else None
        self.map_augment = Linear(cfg.augment_dim, noise_channels, bias=False) if cfg.augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        self.enc = nn.ModuleDict()
        width, aux_width = cfg.in_channels, cfg.in_channels
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(width, cfg.model_channels, 3)
                width = cfg.model_channels
            else:
                self.enc[f"{res}x{res}_down"] = block(width, width, down=True)
                if cfg.encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(aux_width, aux_width, 0, down=True,
                                                               resample_filter=filt)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(aux_width, width, 1)
                if cfg.encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(aux_width, width, 3, down=True,
                                                                   resample_filter=filt, fused_resample=True)
                    aux_width = width
            for idx in range(cfg.num_blocks):
                self.enc[f"{res}x{res}_block{idx}"] = block(width, cfg.model_channels * mult,
                                                            attention=res in cfg.attn_resolutions)
                width = cfg.model_channels * mult
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            enter_level(self.dec, res, level == len(cfg.channel_mult) - 1, width, block)
            for idx in range(cfg.num_blocks + 1):
                self.dec[f"{res}x{res}_block{idx}"] = block(width + skips.pop(), cfg.model_channels * mult,
                                                            attention=idx == cfg.num_blocks
                                                            and res in cfg.attn_resolutions)
                width = cfg.model_channels * mult
            if cfg.decoder_type == "skip" or level == 0:
                if cfg.decoder_type == "skip" and level < len(cfg.channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(cfg.out_channels, cfg.out_channels, 0, up=True,
                                                             resample_filter=filt)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(width, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(width, cfg.out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels * math.sqrt(self.map_label.in_features))
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))

        skips, aux = [], x
        for name, module in self.enc.items():
            if "aux_down" in name:
                aux = module(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + module(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            else:
                x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)

        out, features = None, None
        for name, module in self.dec.items():
            if "aux_up" in name:
                out = module(out)
            elif "aux_norm" in name:
                features = module(x)
            elif "aux_conv" in name:
                features = module(F.silu(features))
                out = features if out is None else features + out
            else:
                if x.shape[1] != module.in_channels:      # a block that takes the encoder's output beside x
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return out

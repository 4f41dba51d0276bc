"""EDM's preconditionings (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
Table 1), which turn a network F (:class:`~rfbench.models.songunet.SongUNet`: DDPM++ / NCSN++, or
:class:`~rfbench.models.dhariwal.DhariwalUNet`: ADM) into a denoiser D(x, sigma) = c_skip x + c_out F(c_in x,
c_noise) of x = data + sigma * noise:

* ``precond="edm"``: c_skip = s_d^2 / (sigma^2 + s_d^2), c_out = sigma s_d / sqrt(sigma^2 + s_d^2), c_in = 1 /
  sqrt(sigma^2 + s_d^2), c_noise = ln(sigma) / 4 (s_d = ``sigma_data``);
* ``"vp"`` (trained as a variance-preserving model): c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1),
  c_noise = (M - 1) t(sigma) with sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1);
* ``"ve"`` (trained as a variance-exploding model): c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2);
* ``"iddpm"`` (improved DDPM, Nichol & Dhariwal 2021, with its cosine schedule alpha_bar(j) = sin(pi j / (2 M (1 +
  C_2)))^2): the M + 1 noise levels u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1) / alpha_bar(j), C_1)
  - 1); c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = M - 1 - j with u_j the level nearest to
  sigma; the network predicts the noise and a variance (2 x the channels), of which the first half is used. Its
  sigma range is [u_{M-1}, u_0].

A class-conditional network (``label_dim > 0``) takes a (B or 1, label_dim) label vector; none given, it gets the
all-zero vector (EDM's unconditional default). A ``use_fp16`` network runs in float16 on CUDA and in float32
elsewhere, as EDM's does; the preconditioning itself always computes in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rfbench.models.dhariwal import DhariwalUNet, DhariwalUNetConfig
from rfbench.models.songunet import SongUNet, SongUNetConfig

PRECONDS = ("edm", "vp", "ve", "iddpm")


@dataclass(frozen=True)
class PrecondConfig:
    """A preconditioning's constructor arguments (EDM's ``EDMPrecond``, ``VPPrecond``, ``VEPrecond``,
    ``iDDPMPrecond``) and its network's (``unet``): ``precond`` is "edm", "vp", "ve" or "iddpm"; the others keep
    EDM's names and defaults (M is VP's 1000 steps and iDDPM's too)."""

    precond: str
    unet: SongUNetConfig | DhariwalUNetConfig
    img_resolution: int
    img_channels: int
    label_dim: int = 0
    use_fp16: bool = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    sigma_data: float = 0.5
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000
    epsilon_t: float = 1e-5
    C_1: float = 0.001
    C_2: float = 0.008

    def __post_init__(self):
        if self.precond not in PRECONDS:
            raise ValueError(f"precond must be one of {', '.join(PRECONDS)}, got {self.precond!r}")
        if not isinstance(self.label_dim, int) or self.label_dim < 0:
            raise ValueError(f"label_dim must be an integer >= 0, got {self.label_dim!r}")
        if not isinstance(self.M, int) or self.M < 2:
            raise ValueError(f"M must be an integer >= 2, got {self.M!r}")
        out = self.img_channels * (2 if self.precond == "iddpm" else 1)
        for name, value in (("img_resolution", self.img_resolution), ("in_channels", self.img_channels),
                            ("out_channels", out), ("label_dim", self.label_dim)):
            if getattr(self.unet, name) != value:
                raise ValueError(f"the network's {name} is {getattr(self.unet, name)!r}; the {self.precond} "
                                 f"preconditioning with img_resolution={self.img_resolution}, img_channels="
                                 f"{self.img_channels}, label_dim={self.label_dim} gives it {value!r}")


def iddpm_sigmas(C_1: float, C_2: float, M: int) -> torch.Tensor:
    """iDDPM's noise levels u_0 > u_1 > ... > u_M = 0 (float32, M + 1 of them; see the module docstring)."""
    j = torch.arange(M + 1, dtype=torch.float32)
    alpha_bar = (0.5 * math.pi * j / M / (C_2 + 1)).sin() ** 2
    u = torch.zeros(M + 1)
    for i in range(M, 0, -1):
        u[i - 1] = ((u[i] ** 2 + 1) / (alpha_bar[i - 1] / alpha_bar[i]).clip(min=C_1) - 1).sqrt()
    return u


class EDMDenoiser(nn.Module):
    """D(x, sigma) around a SongUNet or DhariwalUNet (see the module docstring): ``forward(x, sigma, class_labels=None,
    force_fp32=False)`` with x (B, C, H, W) and sigma (B,) or a scalar; computed in float32 as EDM does (the network
    itself in float16 on CUDA when ``use_fp16`` and not ``force_fp32``)."""

    def __init__(self, config: PrecondConfig):
        super().__init__()
        self.config = config
        self.precond = config.precond
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.label_dim, self.use_fp16 = config.label_dim, config.use_fp16
        self.input_shape = (config.img_channels, config.img_resolution, config.img_resolution)
        if config.precond == "edm":
            self.sigma_data = config.sigma_data
            self.sigma_min = 0.0 if config.sigma_min is None else config.sigma_min
            self.sigma_max = math.inf if config.sigma_max is None else config.sigma_max
        elif config.precond == "vp":
            self.beta_d, self.beta_min, self.M, self.epsilon_t = (config.beta_d, config.beta_min, config.M,
                                                                  config.epsilon_t)
            self.sigma_min = float(self.vp_sigma(torch.tensor(config.epsilon_t)))
            self.sigma_max = float(self.vp_sigma(torch.tensor(1.0)))
        elif config.precond == "ve":
            self.sigma_min = 0.02 if config.sigma_min is None else config.sigma_min
            self.sigma_max = 100 if config.sigma_max is None else config.sigma_max
        else:
            self.C_1, self.C_2, self.M = config.C_1, config.C_2, config.M
            self.register_buffer("u", iddpm_sigmas(config.C_1, config.C_2, config.M))
            self.sigma_min, self.sigma_max = float(self.u[config.M - 1]), float(self.u[0])
        self.model = (SongUNet(config.unet) if isinstance(config.unet, SongUNetConfig)
                      else DhariwalUNet(config.unet))

    def vp_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) of the VP preconditioning."""
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def vp_sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def iddpm_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """The index j of the iDDPM level u_j nearest to each sigma (the first of two equally near)."""
        u = self.u.to(sigma.device)
        return (sigma.to(torch.float32).reshape(-1, 1) - u.reshape(1, -1)).abs().argmin(dim=1)

    def network_dtype(self, device: torch.device, force_fp32: bool = False) -> torch.dtype:
        """float16 for a ``use_fp16`` network on CUDA (unless ``force_fp32``), else float32."""
        return torch.float16 if self.use_fp16 and not force_fp32 and device.type == "cuda" else torch.float32

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
        labels = None
        if self.label_dim:
            labels = (torch.zeros(1, self.label_dim, device=x.device) if class_labels is None
                      else class_labels.to(device=x.device, dtype=torch.float32).reshape(-1, self.label_dim))
        dtype = self.network_dtype(x.device, force_fp32)
        if self.precond == "edm":
            sd2 = self.sigma_data ** 2
            c_skip = sd2 / (sigma ** 2 + sd2)
            c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
            c_in = 1 / (sd2 + sigma ** 2).sqrt()
            c_noise = sigma.log() / 4
        elif self.precond == "vp":
            c_skip, c_out, c_in = 1, -sigma, 1 / (sigma ** 2 + 1).sqrt()
            c_noise = (self.M - 1) * self.vp_sigma_inv(sigma)
        elif self.precond == "ve":
            c_skip, c_out, c_in = 1, sigma, 1
            c_noise = (0.5 * sigma).log()
        else:
            c_skip, c_out, c_in = 1, -sigma, 1 / (sigma ** 2 + 1).sqrt()
            c_noise = (self.M - 1 - self.iddpm_index(sigma)).to(torch.float32)
        c_noise = c_noise.flatten()
        out = self.model((c_in * x).to(dtype), c_noise.expand(x.shape[0]) if c_noise.numel() == 1 else c_noise,
                         labels)
        return c_skip * x + c_out * out[:, :self.img_channels].to(torch.float32)

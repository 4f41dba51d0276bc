"""Seeded training loops with EMA for flow and DDPM objectives."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rfbench.training.counting import counted


# batch(generator, batch_size) -> (x0, x1) on the CPU
PairSampler = Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Adam with a cosine decay of the learning rate to zero; EMA of the weights."""

    steps: int = 4000
    batch_size: int = 1024
    lr: float = 1e-3
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 turns clipping off), got {self.grad_clip}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


def seeded_init(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a network with its initial weights drawn from ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def independent_pairs(source: torch.Tensor | Callable[[torch.Generator, int], torch.Tensor],
                      target: torch.Tensor) -> PairSampler:
    """Independent coupling: x0 from ``source`` (a fixed set, or a sampler such as Gaussian noise), x1 a random
    row of ``target``, drawn independently."""

    def batch(gen: torch.Generator, n: int):
        x1 = target[torch.randint(target.shape[0], (n,), generator=gen)]
        if callable(source):
            x0 = source(gen, n)
        else:
            x0 = source[torch.randint(source.shape[0], (n,), generator=gen)]
        return x0, x1

    return batch


def paired_batches(z0: torch.Tensor, z1: torch.Tensor) -> PairSampler:
    """A fixed coupling: rows (z0[i], z1[i]) drawn together, as reflow and distillation train on."""
    if z0.shape != z1.shape:
        raise ValueError(f"pairs must have matching shapes, got {tuple(z0.shape)} and {tuple(z1.shape)}")

    def batch(gen: torch.Generator, n: int):
        idx = torch.randint(z0.shape[0], (n,), generator=gen)
        return z0[idx], z1[idx]

    return batch


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def rectified_flow_loss(pairs: PairSampler) -> Callable:
    """E_t ||(X1 - X0) - v(X_t, t)||^2 with t ~ U(0, 1) and X_t = t X1 + (1 - t) X0 (Liu et al. 2023, eq. 1)."""

    def loss(net: nn.Module, gen: torch.Generator, n: int, device) -> torch.Tensor:
        x0, x1 = pairs(gen, n)
        t = torch.rand((n,), generator=gen)
        x0, x1, t = x0.to(device), x1.to(device), t.to(device)
        xt = _bcast(t, x0) * x1 + (1 - _bcast(t, x0)) * x0
        return (net(xt, t) - (x1 - x0)).pow(2).flatten(1).sum(1).mean()

    return loss


def distill_loss(pairs: PairSampler) -> Callable:
    """One-step distillation: regress Z1 - Z0 on v(Z0, 0), so one Euler step maps Z0 to Z1."""

    def loss(net: nn.Module, gen: torch.Generator, n: int, device) -> torch.Tensor:
        z0, z1 = pairs(gen, n)
        z0, z1 = z0.to(device), z1.to(device)
        t = torch.zeros((n,), device=device)
        return (net(z0, t) - (z1 - z0)).pow(2).flatten(1).sum(1).mean()

    return loss


def ddpm_loss(data: torch.Tensor, alphas_cumprod: torch.Tensor) -> Callable:
    """DDPM's simple loss (Ho et al. 2020, Algorithm 1): E ||eps - eps_theta(sqrt(a) x + sqrt(1-a) eps, n)||^2
    with n uniform over the T integer timesteps."""
    num_timesteps = alphas_cumprod.shape[0]
    ab = alphas_cumprod.to(torch.float32)

    def loss(net: nn.Module, gen: torch.Generator, n: int, device) -> torch.Tensor:
        x = data[torch.randint(data.shape[0], (n,), generator=gen)]
        steps = torch.randint(num_timesteps, (n,), generator=gen)
        eps = torch.randn(x.shape, generator=gen)
        a = _bcast(ab[steps], x)
        xt = a.sqrt() * x + (1 - a).sqrt() * eps
        xt, steps, eps = xt.to(device), steps.to(device), eps.to(device)
        return (net(xt, steps) - eps).pow(2).flatten(1).sum(1).mean()

    return loss


def fit(net: nn.Module, loss_fn: Callable, config: TrainConfig, device: str | torch.device = "cpu",
        progress: Callable[[int, float], None] | None = None) -> tuple[nn.Module, list[float]]:
    """Train ``net`` in place with Adam and return (EMA copy of the weights, loss per 100 steps).

    ``progress(step, loss)`` is called after every step with the steps done and that step's loss (a
    :meth:`rfbench.progress.Progress.training` job shows them); it sees the numbers, never changes them.

    Inside a :func:`rfbench.training.counting.counting` block (the cache opens one while it makes an entry) each step's
    forward and backward of ``net`` count (:func:`rfbench.training.counted`); a loss that evaluates other networks
    (a teacher, an EMA target) counts them when fit runs inside ``with counted(teacher, ...):``."""
    net.to(device).train()
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    history: list[float] = []
    running = 0.0
    with counted(net):       # its forwards and backwards, in the training's counting block (if any)
        for step in range(1, config.steps + 1):
            loss = loss_fn(net, gen, config.batch_size, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step} of {config.steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            ema.update_parameters(net)
            value = loss.item()
            running += value
            if step % 100 == 0 or step == config.steps:
                history.append(running / (step % 100 or 100))
                running = 0.0
            if progress is not None:
                progress(step, value)
    out = copy.deepcopy(ema.module).eval()
    net.eval()
    return out, history

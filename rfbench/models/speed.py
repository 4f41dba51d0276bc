"""Faster network evaluations for sampling: ``torch.compile`` of the network and channels-last memory for the
convolutional ones. Neither changes what the network computes beyond float round-off (tests/test_precision.py
states by how much); both are recorded in the rows (``compile``, ``memory_format``).

The model a suite loads is a flow module ``v(x, t)`` or a :class:`rfbench.models.DiffusionModel` around an
eps/x0/v network; what is compiled or converted is the network module, so everything a sampler reaches through
the model (its schedule, its ``eps`` and ``denoise``) keeps working.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from rfbench.protocols import is_diffusion_model, network_module

# torch.compile's modes: "reduce-overhead" adds CUDA graphs (fixed shapes; on CUDA, where launch overhead pays)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _with_network(model: Any, net: torch.nn.Module) -> Any:
    if not is_diffusion_model(model):
        return net
    out = copy.copy(model)      # the schedule and settings shared; the network replaced
    out.net = net
    return out


def check_compile_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"--compile takes one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    return mode


def prepare(model: Any, *, compile_mode: str | None = None, channels_last: bool = False) -> Any:
    """The model with its network in channels-last memory (4-d weights only: convolutions) and/or compiled with
    ``torch.compile(mode=compile_mode)``. A model whose network is not a torch module (a plain callable) is an error
    for either option, since nothing would change. Compilation itself happens at the first evaluation of each
    input shape (the runner's untimed warm-up)."""
    check_compile_mode(compile_mode)
    if compile_mode is None and not channels_last:
        return model
    net = network_module(model)
    if net is None:
        wanted = " and ".join(w for w, on in (("--compile", compile_mode), ("--channels-last", channels_last)) if on)
        raise TypeError(f"{wanted} needs a torch.nn.Module network; this model is a {type(model).__name__}")
    if isinstance(net, torch.jit.ScriptModule) and compile_mode is not None:
        raise TypeError("--compile: a TorchScript network cannot be compiled by torch.compile; run without --compile")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile_mode is not None:
        net = torch.compile(net, mode=compile_mode, dynamic=False)
    return _with_network(model, net)

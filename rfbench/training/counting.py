"""Counting what training costs: network evaluations (forward and backward, per sample) and seconds.

The unit is one sample through one network: a forward pass of a batch of B rows through a network counts B, and
the backward pass through that forward's graph counts B more. So one plain training step of batch B costs 2 B (the
student's forward and backward), a teacher evaluated under ``torch.no_grad`` costs B per call (no backward), and
generating N reflow pairs with a solver of NFE n costs n N. A network is any ``torch.nn.Module`` with parameters;
only the outermost network of a call counts (its submodules are part of it), so a network wrapped in another
counts once. A forward-mode JVP through a network (``torch.func.jvp``) is one forward, and the backward through
it one backward: inside a ``torch.func`` transform a forward's output does not show that it needs a gradient, so
there the backward is counted when it reaches the network's first trainable parameter.

:func:`counting` is the training-side twin of the sampling counter (:class:`rfbench.samplers.CountingModel` and
its forward pre-hook): the counts come from hooks on every module call in the block, never from a formula a
recipe states. Blocks nest: an evaluation counts in the innermost block only, and a block's seconds leave out
those of the blocks inside it, so a cache entry made while another is made (a parent trained inside its child's
training) is counted once, in its own entry.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook


@dataclass(frozen=True)
class TrainingCost:
    """What making one thing cost: ``forward`` and ``backward`` evaluations (samples through a network, see the
    module docstring) and ``seconds`` of wall-clock."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0

    @property
    def nfe(self) -> int:
        """Forward and backward evaluations together: the ``train_nfe`` of a result row."""
        return self.forward + self.backward

    def __add__(self, other: "TrainingCost") -> "TrainingCost":
        return TrainingCost(self.forward + other.forward, self.backward + other.backward,
                            self.seconds + other.seconds)

    def to_dict(self) -> dict:
        """Plain numbers, as a cache entry stores them."""
        return {"forward": self.forward, "backward": self.backward, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data) -> "TrainingCost | None":
        """The cost a cache entry stored (:meth:`to_dict`), or None where it holds none or not this shape."""
        if not isinstance(data, dict):
            return None
        forward, backward, seconds = data.get("forward"), data.get("backward"), data.get("seconds")
        if not (isinstance(forward, int) and isinstance(backward, int) and isinstance(seconds, (int, float))):
            return None
        return cls(forward, backward, float(seconds))


class _Counter:
    def __init__(self):
        self.forward = 0
        self.backward = 0
        self.inner_seconds = 0.0     # seconds spent in blocks nested in this one
        self.pending: list = []      # parameter hooks waiting for a backward (forwards inside a torch.func transform)
        self.cost: TrainingCost | None = None


_open: list[_Counter] = []          # the blocks open now, innermost last
_depth = [0]                        # calls of networks running now: only the outermost counts
_handles: list = []


def _is_network(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _rows(args: tuple, kwargs: dict) -> int:
    """The rows of a call: its first tensor argument's first dimension."""
    x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
    return int(x.shape[0]) if x is not None and x.ndim >= 1 else 1


def _pre_hook(module, args):
    if _is_network(module):
        _depth[0] += 1


def _post_hook(module, args, kwargs, output):
    """At the end of the outermost network's call: its rows are a forward, and, where its output is part of a graph
    that gradients flow back through, a backward when they do."""
    if not _is_network(module):
        return
    _depth[0] -= 1
    if _depth[0]:
        return
    counter, rows = _open[-1], _rows(args, kwargs)
    counter.forward += rows
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    out = next((o for o in outputs if isinstance(o, torch.Tensor) and o.requires_grad), None)
    if out is not None:
        def backward(grad):
            counter.backward += rows
        out.register_hook(backward)
        return
    # inside a torch.func transform (jvp) the output does not show that it requires grad though the network's
    # parameters do: the backward is seen where it reaches the first of them instead
    param = next((p for p in module.parameters() if p.requires_grad), None) if torch.is_grad_enabled() else None
    if param is not None:
        def reached(p):
            counter.backward += rows
            handle.remove()
            counter.pending.remove(handle)
        handle = param.register_post_accumulate_grad_hook(reached)
        counter.pending.append(handle)


@contextlib.contextmanager
def counting():
    """Count the network evaluations and seconds of the block (see the module docstring); the block gets an object
    whose ``cost`` (a :class:`TrainingCost`) is set when it ends (also when it raises)."""
    counter = _Counter()
    if not _open:
        _handles.append(register_module_forward_pre_hook(_pre_hook))
        _handles.append(register_module_forward_hook(_post_hook, with_kwargs=True, always_call=True))
    _open.append(counter)
    start = time.perf_counter()
    try:
        yield counter
    finally:
        elapsed = time.perf_counter() - start
        _open.pop()
        while counter.pending:          # forwards no backward reached within the block
            counter.pending.pop().remove()
        if _open:
            _open[-1].inner_seconds += elapsed
        else:
            while _handles:
                _handles.pop().remove()
            _depth[0] = 0
        counter.cost = TrainingCost(counter.forward, counter.backward, elapsed - counter.inner_seconds)

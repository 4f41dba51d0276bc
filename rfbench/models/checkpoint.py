"""rfbench's own checkpoints: the network's state_dict with the config that built it, written atomically."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfbench.files import atomic_write
from rfbench.protocols import is_diffusion_model, network_module

FORMAT = "rfbench-checkpoint"
FORMAT_VERSION = 1


def jsonable(config: dict) -> dict:
    """The config as it reads back from JSON (tuples become lists, other objects their str), for storing and
    comparing with what a checkpoint holds."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-able config (sorted keys): the cache key of what the config builds."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of another format, or not matching the expected model."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`rfbench.files.atomic_write`: readers never see half a file."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(path: str | os.PathLike, net: nn.Module, config: dict, **extra: Any) -> None:
    """Save ``net``'s state_dict with ``config`` (a plain dict of what built and trained it)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **extra}
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read an rfbench checkpoint file; every failure is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a torch file at all
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not an rfbench checkpoint (format {found!r}, expected {FORMAT!r})")
    return payload


def load_checkpoint(path: str | os.PathLike, net: nn.Module, expected_config: dict | None = None) -> dict:
    """Load weights into ``net`` (strictly) and return the payload.

    With ``expected_config``, every key must match the stored config; the first mismatch is an error naming it.
    """
    payload = read_checkpoint(path)
    if expected_config is not None:
        mismatch = _first_difference(payload["config"], expected_config)
        if mismatch is not None:
            key, stored, expected = mismatch
            raise CheckpointError(f"checkpoint {path} does not match: config key {key!r} is {stored!r} in the file, "
                                  f"expected {expected!r}")
    load_state_dict_strict(net, payload["state_dict"], source=str(path))
    return payload


def _first_difference(stored: Any, expected: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, stored value, expected value) where two nested configs differ, or None."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in sorted(set(stored) | set(expected), key=str):
            if key not in stored or key not in expected:
                return (prefix + str(key), stored.get(key, "<missing>"), expected.get(key, "<missing>"))
            found = _first_difference(stored[key], expected[key], f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if stored == expected else (prefix.rstrip("."), stored, expected)


def load_state_dict_strict(net: nn.Module, state: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with one error that names the first missing, unexpected or misshapen key."""
    check_state_dict(net, state, source)
    net.load_state_dict(state, strict=True)


def check_state_dict(net: nn.Module, state: dict, source: str) -> None:
    """That ``state`` fits ``net`` key for key and shape for shape (``net`` may live on the meta device: nothing is
    read or allocated); one CheckpointError naming the first missing, unexpected or misshapen key."""
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{source}: its state_dict is not a mapping of names to tensors")
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key(s) {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected key(s) {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(f"{source} does not fit {type(net).__name__}: {'; '.join(parts)}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{source} does not fit {type(net).__name__}: key {key!r} has shape "
                                  f"{tuple(state[key].shape)} in the file, the model expects {tuple(value.shape)}")


def weights_sha1(model: Any) -> str | None:
    """SHA-1 over the name, dtype, shape and bytes of every parameter and buffer of the torch module behind
    ``model`` (the model itself, or a DiffusionModel's ``net`` with its ``alphas_cumprod``); None where no module
    is behind it (a plain callable)."""
    net = model if isinstance(model, torch.nn.Module) else network_module(model)
    if net is None:
        return None
    tensors = list(itertools.chain(net.named_parameters(), net.named_buffers()))
    if is_diffusion_model(model) and not isinstance(model, torch.nn.Module):
        tensors.append(("alphas_cumprod", torch.as_tensor(model.alphas_cumprod)))
    digest = hashlib.sha1()
    for name, tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def stated_id(model: Any, what: str) -> str | None:
    """The id a loaded model states for itself (its ``model_id`` attribute), or None; ``what`` names it in the
    error an id that is not a non-empty string gets."""
    stated = getattr(model, "model_id", None)
    if stated is not None and (not isinstance(stated, str) or not stated.strip()):
        raise TypeError(f"{what}: model_id must be a non-empty string naming the weights, got {stated!r}")
    return stated

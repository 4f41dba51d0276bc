"""EDM's network pickles (NVlabs/edm: ``network-snapshot-*.pkl`` of its training loop, the published ``edm-*.pkl``),
read without running them, and the network in them as an rfbench flow.

EDM saves a network through ``torch_utils.persistence``: each of its layers is pickled as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds the Python source of the module
that defines the layer's class, the class name and the object's state (its ``__dict__``: ``_parameters``,
``_buffers``, ``_modules``, the recorded constructor arguments ``_init_args`` / ``_init_kwargs``, plain attributes).
An ordinary ``pickle.load`` execs that source, so a file can run any code it holds. rfbench never runs it:
:func:`read_edm_pickle` unpickles through an unpickler whose ``find_class`` admits only what rebuilds the data
(torch's tensor and parameter rebuild functions, storages read back by ``torch.load(weights_only=True)``,
``collections.OrderedDict``, torch's container modules as inert records, numpy dtypes and scalars of plain dtypes)
and maps the persistence function to :class:`PersistentRecord`, which only records ``meta``; every other global is
refused in one line naming the file and the global. The embedded source is kept as text and never executed: a file
whose source was altered loads exactly as the same file with the original source.

:func:`load_edm_pickle` then builds rfbench's own network (:mod:`rfbench.models.edm_precond` around
:mod:`rfbench.models.songunet` or :mod:`rfbench.models.dhariwal`) from the constructor
arguments recorded in the file, checks it against the file (the class of every layer, the plain attributes EDM
records for it, every parameter and buffer by name and shape; one line naming the file and the first mismatch) and
loads the weights. :class:`EDMFlow` samples it in rfbench's time: sigma = (1 - t) / t, x_sigma = x_t / t.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfbench.models.checkpoint import CheckpointError, load_state_dict_strict
from rfbench.models.paths import FLOW_DELTA, RectifiedPath
from rfbench.models.dhariwal import DhariwalUNetConfig
from rfbench.models.edm_precond import EDMDenoiser, PrecondConfig, iddpm_sigmas
from rfbench.models.labels import SEEDS, unbound_error
from rfbench.models.songunet import SongUNetConfig

PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
PRECONDS = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}
NETWORKS = {"SongUNet": SongUNetConfig, "DhariwalUNet": DhariwalUNetConfig}
# each precond's constructor arguments in EDM's order (positional arguments are matched to them), and the default
# network class it builds
PRECOND_ARGS = {
    "edm": (("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "sigma_data",
             "model_type"), "DhariwalUNet"),
    "vp": (("img_resolution", "img_channels", "label_dim", "use_fp16", "beta_d", "beta_min", "M", "epsilon_t",
            "model_type"), "SongUNet"),
    "ve": (("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "model_type"),
           "SongUNet"),
    "iddpm": (("img_resolution", "img_channels", "label_dim", "use_fp16", "C_1", "C_2", "M", "model_type"),
              "DhariwalUNet"),
}
EDM_MAGIC = b"torch_utils.persistence"


@dataclass
class PersistentRecord:
    """What a ``torch_utils.persistence`` object holds, recorded and never run: its class name, the sha1 of its
    embedded module source, and its state (parameters, buffers, sub-modules, recorded constructor arguments)."""

    class_name: str
    source_sha1: str
    state: dict

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class ModuleRecord:
    """The state of a plain torch container module (``ModuleDict``, ``ModuleList``, ``Sequential``) in the pickle,
    recorded: pickle makes it with ``cls.__new__`` and hands it its ``__dict__`` through ``__setstate__``."""

    class_name = "Module"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"torch.nn.{self.class_name} state is a {type(state).__name__}, not a dict")
        self.state = state

    def __reduce__(self):      # copies (copy.deepcopy) rebuild the record, not its __dict__
        return (CONTAINERS[self.class_name], (), self.state)


CONTAINERS = {name: type(name, (ModuleRecord,), {"class_name": name})
              for name in ("ModuleDict", "ModuleList", "Sequential")}


def _record_persistent(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or not {"class_name", "state", "module_src"} <= set(meta):
        raise pickle.UnpicklingError("a torch_utils.persistence object without class_name, module_src and state")
    if meta.get("type", "class") != "class" or not isinstance(meta["state"], dict):
        raise pickle.UnpicklingError(f"a torch_utils.persistence object of type {meta.get('type')!r} (expected "
                                     f"'class' with a dict state)")
    source = meta["module_src"]
    digest = hashlib.sha1(source.encode() if isinstance(source, str) else b"").hexdigest()
    return PersistentRecord(str(meta["class_name"]), digest, meta["state"])


def _storage_from_bytes(data: bytes):
    """A storage pickled by torch (``torch.storage._load_from_bytes``), read back with ``weights_only=True``."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"a torch storage given as {type(data).__name__}, not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_SCALAR = np.float64(0).__reduce__()[0]     # numpy's own scalar constructor, as numpy pickles a scalar


def _plain_scalar(dtype, *args):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype} (Python objects, not data)")
    return _SCALAR(dtype, *args)


def _dtype(spec, align=False, copy=False):
    """A numpy dtype, always a new object: a pickle's BUILD on it cannot reach numpy's shared built-in dtypes."""
    return np.dtype(spec, bool(align), True)


ALLOWED = {
    ("numpy", "dtype"): _dtype,
    PERSISTENCE: _record_persistent,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # torch's own rebuild functions, the ones its weights-only unpickler admits
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    **{(f"numpy.{core}.multiarray", "scalar"): _plain_scalar for core in ("core", "_core")},
    **{("torch.nn.modules.container", name): cls for name, cls in CONTAINERS.items()},
}


class _Refused(pickle.UnpicklingError):
    pass


def _per_load(target):
    """A stand-in for ``target`` that lives only as long as one load. A pickle can set attributes on any object it
    holds (BUILD), globals included: on these it changes nothing outside the load (torch's rebuild functions, numpy,
    the record classes stay as they are)."""
    if isinstance(target, type):
        return type(target.__name__, (target,), {})

    def call(*args):
        return target(*args)
    return call


class _EDMUnpickler(pickle.Unpickler):
    def __init__(self, fh):
        super().__init__(fh)
        self._allowed = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in ALLOWED:
            raise _Refused(f"{module}.{name}")
        if key not in self._allowed:
            self._allowed[key] = ALLOWED[key] if ALLOWED[key] is collections.OrderedDict else _per_load(ALLOWED[key])
        return self._allowed[key]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"a persistent id {str(pid)[:40]!r} (a torch.save file, not an EDM pickle)")


def is_edm_pickle(path: str | Path) -> bool:
    """Whether ``path`` looks like an EDM network pickle: a plain pickle (not a torch.save zip) that names
    ``torch_utils.persistence`` near its start (where the first persistent object, the network, begins)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    return head[:1] == b"\x80" and EDM_MAGIC in head


def read_edm_pickle(path: str | Path) -> dict:
    """The top-level dict of an EDM network pickle, with every persistent object as a :class:`PersistentRecord`;
    nothing in the file is run. Errors are :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EDM network pickle not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = _EDMUnpickler(fh).load()
    except _Refused as exc:
        raise CheckpointError(f"{path}: refused: the pickle calls {exc} while loading; an EDM network pickle may "
                              f"only rebuild tensors, containers and torch_utils.persistence objects (whose "
                              f"embedded source rfbench never runs)") from None
    except Exception as exc:   # truncated, not a pickle, or a malformed persistent object
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: not a readable EDM network pickle ({type(exc).__name__}: "
                              f"{text[:160]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("ema"), PersistentRecord):
        found = (f"a dict with keys {', '.join(map(str, list(data)[:6]))}" if isinstance(data, dict)
                 else type(data).__name__)
        raise CheckpointError(f"{path} holds {found}; an EDM network pickle is a dict whose 'ema' entry is the "
                              f"network")
    return data


def edm_config(path: str | Path, record: PersistentRecord) -> PrecondConfig:
    """The precond and network configuration recorded in the file (the constructor arguments of both)."""
    kind = PRECONDS.get(record.class_name)
    if kind is None:
        raise CheckpointError(f"{path}: 'ema' is a {record.class_name}; rfbench reads EDM's "
                              f"{', '.join(PRECONDS)}")
    names, default_model = PRECOND_ARGS[kind]
    args, kwargs = record.init_args, record.init_kwargs
    if len(args) > len(names):
        raise CheckpointError(f"{path}: {record.class_name} was built with {len(args)} positional arguments; it "
                              f"takes at most {len(names)}")
    kwargs.update(zip(names, args))
    model_type = kwargs.pop("model_type", default_model)
    inner = record.state.get("_modules", {}).get("model")
    found = inner.class_name if isinstance(inner, PersistentRecord) else model_type
    if found not in NETWORKS or model_type not in NETWORKS:
        raise CheckpointError(f"{path}: its network is {record.class_name} around "
                              f"{model_type if found in NETWORKS else found}; rfbench reads SongUNet (DDPM++, "
                              f"NCSN++) and DhariwalUNet (ADM)")
    if found != model_type or not isinstance(inner, PersistentRecord):
        raise CheckpointError(f"{path}: {record.class_name} records model_type={model_type!r}, and its network "
                              f"'model' is {'a ' + found if isinstance(inner, PersistentRecord) else 'missing'}")
    own = {k: kwargs.pop(k) for k in names if k in kwargs}
    recorded = inner.init_kwargs
    for key, value in kwargs.items():      # what the precond passed on to its network is what the network records
        if key not in recorded or recorded[key] != value:
            raise CheckpointError(f"{path}: {record.class_name} was given {key}={value!r} for its network, which "
                                  f"records {key}={recorded.get(key, '<missing>')!r}")
    if inner.init_args:
        raise CheckpointError(f"{path}: its {model_type} was built with positional arguments; EDM's preconditionings "
                              f"pass only keyword arguments")
    try:
        unet = NETWORKS[model_type](**_plain(inner.init_kwargs))
        return PrecondConfig(precond=kind, unet=unet, **_plain(own))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the recorded constructor arguments of {record.class_name} / {model_type} "
                              f"do not build rfbench's network: {exc}") from None


def _plain(kwargs: dict) -> dict:
    """numpy scalars as Python numbers (EDM records some constructor arguments as numpy floats)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in kwargs.items()}


def _recorded_state(record: Any, where: str, path: Path, out: dict) -> dict:
    """The state_dict of a recorded module tree: parameters, persistent buffers, sub-modules, by dotted name."""
    state = record.state
    for group in ("_parameters", "_buffers"):
        skip = state.get("_non_persistent_buffers_set", set()) if group == "_buffers" else set()
        for name, value in (state.get(group) or {}).items():
            if value is None or name in skip:
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: {where}{name} is a {type(value).__name__}, not a tensor")
            out[where + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, ModuleRecord)):
            raise CheckpointError(f"{path}: {where}{name} is a {type(child).__name__}, not a network module")
        _recorded_state(child, f"{where}{name}.", path, out)
    return out


RECORD_NAMES = {EDMDenoiser: tuple(PRECONDS)}


def _check_tree(module: torch.nn.Module, record: Any, where: str, path: Path) -> None:
    """That the recorded module tree is rfbench's network, layer by layer: the same class, the same sub-modules and
    the same recorded plain attributes (channels, groups, eps, heads, skip scale, resampling, sigma range ...)."""
    expected = RECORD_NAMES.get(type(module), (type(module).__name__,))
    at = where.rstrip(".") or "ema"
    if record.class_name not in expected:
        raise CheckpointError(f"{path}: {at} is a {record.class_name} in the file, rfbench's network "
                              f"has a {expected[0]} there")
    for name, value in record.state.items():
        if name.startswith("_") or name == "training" or not isinstance(value, (bool, int, float, str, np.generic)):
            continue
        if name not in vars(module):
            continue
        ours = vars(module)[name]
        value = value.item() if isinstance(value, np.generic) else value
        same = (math.isclose(value, ours, rel_tol=1e-6) if isinstance(value, float) or isinstance(ours, float)
                else value == ours)
        if not same:
            raise CheckpointError(f"{path}: {at} records {name}={value!r}, rfbench's network built from "
                                  f"the recorded arguments has {ours!r}")
    children = {k: v for k, v in (record.state.get("_modules") or {}).items() if v is not None}
    ours = {k: v for k, v in module.named_children()}
    if set(children) != set(ours):
        extra, missing = sorted(set(children) - set(ours)), sorted(set(ours) - set(children))
        raise CheckpointError(f"{path}: {at} has sub-modules that rfbench's network "
                              + (f"lacks: {', '.join(extra[:5])}" if extra else f"has and the file lacks: "
                                 f"{', '.join(missing[:5])}"))
    for name, child in ours.items():
        _check_tree(child, children[name], f"{where}{name}.", path)


def load_edm_pickle(path: str | Path) -> EDMDenoiser:
    """rfbench's network for the ``ema`` entry of an EDM pickle, with its weights, on the CPU, in eval mode."""
    return network_from_record(read_edm_pickle(path)["ema"], path)


def network_from_record(record: PersistentRecord, path: str | Path) -> EDMDenoiser:
    """rfbench's network built from a recorded EDM network (``path`` names it in errors), checked against the record
    layer by layer and key by key, with the record's weights."""
    path = Path(path)
    config = edm_config(path, record)
    net = EDMDenoiser(config)
    _check_tree(net, record, "", path)
    load_state_dict_strict(net, _recorded_state(record, "", path, {}), source=f"{path} ('ema')")
    if config.precond == "iddpm":
        _check_iddpm_levels(net.u, iddpm_sigmas(config.C_1, config.C_2, config.M), path)
    return net.eval()


def _check_iddpm_levels(found: torch.Tensor, expected: torch.Tensor, path: Path) -> None:
    """That the file's iDDPM noise levels (its buffer ``u``) are those its C_1, C_2 and M give."""
    bad = ~torch.isclose(found.double(), expected.double(), rtol=1e-5, atol=0)
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        raise CheckpointError(f"{path}: its iDDPM noise levels u differ from those of its C_1, C_2, M (first at "
                              f"u[{j}]: {found[j].item():.7g} in the file, {expected[j].item():.7g} computed)")


def edm_input_shape(path: str | Path) -> tuple[int, ...]:
    config = edm_config(path, read_edm_pickle(path)["ema"])
    return (config.img_channels, config.img_resolution, config.img_resolution)


class EDMPath(RectifiedPath):
    """A rectified path (alpha = t, sigma_t = 1 - t, so EDM's sigma = (1 - t) / t) whose finite range is the
    network's own sigma range where it has one (EDM's sampler clips its sigma_min / sigma_max to it)."""

    def __init__(self, sigma_min: float, sigma_max: float):
        super().__init__(0.0)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def finite_range(self) -> tuple[float, float]:
        lo = 1 / (1 + self.sigma_max) if math.isfinite(self.sigma_max) else FLOW_DELTA
        hi = 1 / (1 + self.sigma_min) if self.sigma_min > 0 else 1 - FLOW_DELTA
        return lo, hi


class EDMFlow(torch.nn.Module):
    """An EDM denoiser D(x_sigma, sigma) (``net``) as an rfbench flow: at flow time t (t=0 noise, t=1 data) the
    state x_t = t X1 + (1 - t) X0 is EDM's x_sigma = x_t / t at sigma = (1 - t) / t, so

        denoise(x_t, t) = D(x_t / t, (1 - t) / t)   (the data prediction E[X1 | x_t]),
        v(x_t, t) = (denoise(x_t, t) - x_t) / (1 - t).

    Both take t (B,) in (0, 1]; denoise at t = 1 (sigma = 0) is x itself. The velocity is not defined at t = 0
    (sigma = inf; grids such as karras start at EDM's sigma_max) nor at t = 1. ``net(x_sigma, sigma)`` is EDM's
    denoiser itself.

    ``class_label`` (class-conditional networks, label_dim > 0): every sample is of that class (its one-hot label
    vector); "seeds": each sample's class is drawn from its seed (uniform over the label_dim classes,
    :mod:`rfbench.models.labels`), and the evaluations take the rows' classes, ``model(x, t, class_labels=...)``
    with class indices (B,), which :func:`rfbench.sample` passes from its ``seeds``; None (the default) samples
    unconditionally, with the all-zero label vector, as EDM's networks do when given no labels. A ``use_fp16``
    network runs in float16 on CUDA, as EDM's does."""

    def __init__(self, net: EDMDenoiser, class_label: int | str | None = None):
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape
        self.sigma_min, self.sigma_max = float(net.sigma_min), float(net.sigma_max)
        fixed = class_label is None or (not isinstance(class_label, bool) and isinstance(class_label, int)
                                        and 0 <= class_label < net.label_dim)
        if not fixed and not (class_label == SEEDS and net.label_dim):
            allowed = (f"an integer in 0..{net.label_dim - 1}, {SEEDS!r} (each sample's class from its seed) or None "
                       f"(unconditional)" if net.label_dim else "None: the network is unconditional (label_dim 0)")
            raise ValueError(f"class_label must be {allowed}, got {class_label!r}")
        self.class_label = class_label
        self.classes_from_seeds = net.label_dim if class_label == SEEDS else 0
        labels = torch.zeros(1, net.label_dim)
        if isinstance(class_label, int):
            labels[0, class_label] = 1
        self.register_buffer("class_labels", labels if net.label_dim else None, persistent=False)

    @property
    def gaussian_path(self) -> EDMPath:
        return EDMPath(self.sigma_min, self.sigma_max)

    @property
    def notes(self) -> str | None:
        """What each of its result rows says (the runner reads a model's ``notes``): that its network ran in float16,
        which ``net_dtype`` (the run's --dtype) does not show, where it does."""
        device = next(self.net.parameters()).device
        if self.net.network_dtype(device) != torch.float16:
            return None
        return ("the network ran in float16 on CUDA (the EDM file's use_fp16, as EDM runs it), whatever net_dtype "
                "says")

    def _times(self, x: torch.Tensor, t: torch.Tensor, upper: bool) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=torch.float64).reshape(-1)
        if bool((t <= 0).any()) or bool((t > 1).any() if upper else (t >= 1).any()):
            bad = t[(t <= 0) | ((t > 1) if upper else (t >= 1))][0].item()
            allowed = "(0, 1]" if upper else "(0, 1)"
            raise ValueError(f"an EDM network is evaluated at sigma = (1 - t) / t for t in {allowed}, got t={bad:g}"
                             f"{' (sigma = inf): use a grid that starts at t > 0, such as karras' if bad <= 0 else ''}")
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    def _labels(self, x: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor | None:
        """The network's label vectors: the one-hot rows of ``class_labels`` (class indices (B,), from the seeds)
        where the model draws its classes from the seeds, else its own fixed vector."""
        if not self.classes_from_seeds:
            if class_labels is not None:
                raise TypeError(f"class_labels are taken only by a model whose classes come from the seeds "
                                f"(class_label={SEEDS!r}); this one has class_label={self.class_label!r}")
            return self.class_labels
        if class_labels is None:
            raise unbound_error(self)
        class_labels = torch.as_tensor(class_labels).reshape(-1)
        if class_labels.shape[0] != x.shape[0]:
            raise ValueError(f"class_labels has {class_labels.shape[0]} entries but x has {x.shape[0]} rows: pass "
                             f"one class per row")
        return torch.nn.functional.one_hot(class_labels.to(device=x.device, dtype=torch.long),
                                           self.classes_from_seeds).float()

    def denoise(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self._labels(x, class_labels)
        t = self._times(x, t, upper=True)
        shape = (-1,) + (1,) * (x.ndim - 1)
        sigma = (1 - t) / t
        out = self.net(x / t.reshape(shape).to(x.dtype), sigma, labels).to(x.dtype)
        return torch.where((sigma == 0).reshape(shape), x, out)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        t = self._times(x, t, upper=False)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return (self.denoise(x, t, class_labels) - x) / (1 - t).reshape(shape).to(x.dtype)

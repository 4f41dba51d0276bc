"""Models from files, whatever codebase wrote them: the format is read from the file, not taken from its name.

* an rfbench checkpoint (``format: rfbench-checkpoint``, written by rfbench's model cache or ``save_checkpoint``):
  rebuilt from the config inside it; the config also says what it is (a flow, a one-step distilled map, or a DDPM
  eps network with its schedule);
* an official checkpoint of gnobitab/RectifiedFlow or score_sde_pytorch (``model`` with ``module.`` keys, the EMA
  ``shadow_params``): the published CIFAR-10 DDPM++ (:mod:`rfbench.models.ncsnpp`), sampled as a rectified flow on
  t in [1e-3, 1] (:class:`~rfbench.models.score_sde.TimeWindowFlow`) or, for score-SDE's VP / sub-VP files, through
  the probability-flow ODE (:class:`~rfbench.models.score_sde.VPSDEFlow`); which one is the ``flavor``;
* a diffusers ``UNet2DModel`` folder with its scheduler config (:mod:`rfbench.models.diffusers_folder`);
* a TorchScript file (``torch.jit.save``) holding a flow ``model(x, t)``, with x (B, ...) and t (B,) in [0, 1];
* an EDM network pickle (NVlabs/edm's ``network-snapshot-*.pkl``, the published ``edm-*.pkl``), read without running
  the code it embeds (:mod:`rfbench.models.edm`) and sampled as a flow through sigma = (1 - t) / t.

:func:`load_model` is the one loader of all of them (``--model NAME=PATH``, ``--checkpoint``, ``rfbench.load_model``).

Every error names the file and what was expected.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from rfbench.device import resolve_device
from rfbench.files import sha1_files
from rfbench.models.checkpoint import (FORMAT, CheckpointError, check_state_dict, load_state_dict_strict,
                                      read_checkpoint)
from rfbench.models.diffusers_folder import (folder_identity, folder_input_shape, is_diffusers_folder,
                                             load_diffusers_ddpm)
from rfbench.models.diffusion import DiffusionModel, linear_betas
from rfbench.models.edm import EDMFlow, edm_input_shape, is_edm_pickle, load_edm_pickle
from rfbench.models.ncsnpp import NCSNpp, NCSNppConfig, load_score_sde_checkpoint
from rfbench.models.networks import CONFIG_TYPES, build_network, network_input_shape
from rfbench.models.score_sde import TimeWindowFlow, VPSDEFlow

RF_T_MIN = 1e-3
FLAVORS = ("rf", "vp", "subvp")     # official files: rectified flow, score-SDE VP, score-SDE sub-VP
FORMATS = {"rfbench": "rfbench checkpoint", "official": "official rectified-flow / score-SDE checkpoint",
           "diffusers": "diffusers UNet2DModel folder", "torchscript": "TorchScript file",
           "edm": "EDM network pickle"}
EXPECTED = ("an rfbench checkpoint, an official rectified-flow / score-SDE checkpoint (.pth), a diffusers "
            "UNet2DModel folder, a TorchScript file (torch.jit.save) of a flow model(x, t) or an EDM network pickle")
PUBLISHED = NCSNppConfig(dropout=0.15)   # the published CIFAR-10 DDPM++ (dropout is inactive when sampling)


def sniff(path: str | Path) -> str:
    """Which format ``path`` holds: "rfbench", "official", "diffusers", "torchscript" or "edm". Only the pickled
    structure is read (mmap leaves the tensor data, hundreds of MB for DDPM++, on disk until the real load)."""
    path = Path(path)
    if path.is_dir():
        if is_diffusers_folder(path):
            return "diffusers"
        raise CheckpointError(f"{path} is a folder without config.json (or unet/config.json): the only folders "
                              f"rfbench loads are diffusers UNet2DModel folders; expected {EXPECTED}")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
            return "torchscript"
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; expected {EXPECTED}")
    if is_edm_pickle(path):
        return "edm"
    with warnings.catch_warnings():     # torch's advice on pickle protocols is not the user's business here
        warnings.simplefilter("ignore")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:   # the pre-1.6 format cannot be memory-mapped: read it whole
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise CheckpointError(f"{path} is not a model file rfbench can read ({_why_unreadable(exc)}); "
                                      f"expected {EXPECTED}") from None
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return "rfbench"
    if isinstance(payload, dict) and "model" in payload:
        return "official"
    found = f"a dict with keys {', '.join(map(str, list(payload)[:6]))}" if isinstance(payload, dict) else \
        type(payload).__name__
    raise CheckpointError(f"{path} holds {found}, not a model rfbench knows; expected {EXPECTED}")


def _why_unreadable(exc: Exception) -> str:
    """What torch.load's failure means, in a few words. Its advice to retry without weights-only loading is never
    right here: rfbench reads weights only, never pickled code (which would run on loading)."""
    text = str(exc).strip()
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds pickled Python objects, not only tensors; rfbench loads weights only (torch.load with "
                "weights_only=True), never code: save the model's state_dict")
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:160]}"


def file_identity(path: str | Path) -> str:
    """``name (sha1 prefix)`` of a model file (or diffusers folder), for the ``model_checkpoint`` column."""
    if Path(path).is_dir():
        return folder_identity(path)
    return f"{Path(path).name} (sha1 {sha1_files(path)[:12]})"


def _rfbench_config(path: Path) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    spec = config.get("net")
    if not isinstance(spec, dict) or spec.get("arch") not in CONFIG_TYPES:
        raise CheckpointError(f"{path}: an rfbench checkpoint without a network spec ('config.net.arch' one of "
                              f"{', '.join(CONFIG_TYPES)}); was it written by rfbench's model cache?")
    return config


def check_rfbench_weights(path: str | Path) -> None:
    """That an rfbench checkpoint's weights are its network's: the network its config describes, built on the meta
    device (no memory), against the file's tensors, memory-mapped (read lazily: only their shapes are looked at).
    A damaged or hand-edited file is refused before any work, naming the first key that does not fit."""
    path = Path(path)
    config = _rfbench_config(path)
    with torch.device("meta"):
        net = build_network(_net_config(path, config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    check_state_dict(net, payload.get("state_dict"), str(path))


def file_config(path: str | Path) -> dict:
    """The config recorded in an rfbench checkpoint (what built and trained it: model name, problem, network)."""
    return _rfbench_config(Path(path))


def _net_config(path: Path, config: dict):
    spec = config["net"]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "arch"}
    try:
        return CONFIG_TYPES[spec["arch"]](**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its network spec does not build a {spec['arch']}: {exc}") from None


def file_kind(path: str | Path) -> str:
    """What a model file is sampled as: "flow", "one-step" or "diffusion" (an official file is a flow; which
    official model it is cannot be read from it, so a distilled one needs the kind said)."""
    fmt = sniff(path)
    if fmt == "diffusers":
        return "diffusion"
    if fmt == "rfbench":
        config = _rfbench_config(Path(path))
        if config.get("family") == "ddpm":
            return "diffusion"
        return "one-step" if str(config.get("model", "")).endswith("-distill") else "flow"
    return "flow"


def file_input_shape(path: str | Path, network: NCSNppConfig | None = None) -> tuple[int, ...] | None:
    """The input shape of one sample, read without loading the weights (None for a TorchScript file that does not
    say: it is then probed on the suite's shape before any work)."""
    fmt = sniff(path)
    if fmt == "diffusers":
        return folder_input_shape(path)
    if fmt == "rfbench":
        return network_input_shape(_net_config(Path(path), _rfbench_config(Path(path))))
    if fmt == "official":
        return network_input_shape(network or PUBLISHED)
    if fmt == "edm":
        return edm_input_shape(path)
    return None


def load_model(path: str | Path, device: str | torch.device | None = None, *, flavor: str | None = None,
               network: NCSNppConfig | None = None, class_label: int | str | None = None):
    """The sampler-ready model in the file (or diffusers folder) ``path``, in any format rfbench reads (see the module
    docstring; the format is read from the file): a flow ``v(x, t)`` (an EDM network: :class:`EDMFlow`, with
    ``denoise``) or a :class:`DiffusionModel`, on ``device`` (default: cuda when there is one, else cpu).

    ``flavor`` (official files only): "rf" (default), "vp" or "subvp". ``network``: the DDPM++ configuration of an
    official file (default: the published CIFAR-10 one). ``class_label`` (class-conditional EDM networks only): the
    class of every sample, or "seeds": each sample's class drawn from its seed (:mod:`rfbench.models.labels`; sample
    it with ``rfbench.sample(..., seeds=...)``) (default None: unconditional, the all-zero label vector, as EDM
    does)."""
    path = Path(path).expanduser()
    device = resolve_device(device)
    fmt = sniff(path)
    if flavor is not None and flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
    if flavor not in (None, "rf") and fmt != "official":
        raise CheckpointError(f"{path} is a {FORMATS[fmt]}; the score-SDE flavor {flavor!r} applies to official "
                              f"score-SDE checkpoints only")
    if class_label is not None and fmt != "edm":
        raise CheckpointError(f"{path} is a {FORMATS[fmt]}; class_label applies to class-conditional EDM network "
                              f"pickles only")
    if fmt == "diffusers":
        return load_diffusers_ddpm(path, device)
    if fmt == "torchscript":
        return _torchscript(path, device)
    if fmt == "rfbench":
        return _rfbench_model(path, device)
    if fmt == "edm":
        return EDMFlow(load_edm_pickle(path), class_label).to(device).eval()
    net = NCSNpp(network or PUBLISHED)
    load_score_sde_checkpoint(path, net, use_ema=True)
    net = net.to(device).eval()
    if flavor in (None, "rf"):
        return TimeWindowFlow(net, RF_T_MIN).eval()
    return VPSDEFlow(net.forward_labels, sub_vp=flavor == "subvp").eval()


def _rfbench_model(path: Path, device):
    """A flow or DiffusionModel rebuilt from an rfbench checkpoint's own config."""
    payload = read_checkpoint(path)
    config = _rfbench_config(path)
    net = build_network(_net_config(path, config))
    load_state_dict_strict(net, payload["state_dict"], source=str(path))
    net = net.to(device).eval()
    if config.get("family") == "ddpm":
        betas = linear_betas(config["num_timesteps"], config["beta_start"], config["beta_end"])
        return DiffusionModel(net, betas, prediction="eps")
    return net


class TorchScriptFlow(torch.nn.Module):
    """A TorchScript module ``model(x, t)`` behind the flow interface; ``input_shape`` when the module has one."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module
        shape = getattr(module, "input_shape", None)
        self.input_shape = tuple(int(s) for s in shape) if shape is not None else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.module(x, t)


def _torchscript(path: Path, device) -> TorchScriptFlow:
    import warnings
    try:
        with warnings.catch_warnings():   # torch.jit.load is deprecated in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: torch.jit.load failed ({type(exc).__name__}: {first[:160]})") from None
    return TorchScriptFlow(module.eval()).eval()

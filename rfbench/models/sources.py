"""Where a suite's model comes from: one interface for rfbench's baselines and a user's own model alike.

A :class:`ModelSource` says what kind of model it gives (``flow``: sampled by ODE solvers; ``one-step``: a
distilled map, one Euler step; ``diffusion``: a :class:`~rfbench.models.DiffusionModel`, sampled by ddim, ddpm and
its probability-flow ODE), what it is (:class:`ModelIdentity`: part of every cell's key, so a changed recipe, file or
loaded weights is another cell, and the regression gate refuses to compare across it), the shape of one input (checked
against the suite before any work) and how to load it (:meth:`ModelSource.load`).

The kinds of source:

* :class:`Recipe`: trained by rfbench and cached under a hash of everything that determines it (rfbench's
  baselines subclass it; so can a plugin);
* :class:`ModelFile`: a file of rfbench or another codebase (:mod:`rfbench.models.formats`);
* :class:`Factory`: a function returning the model, given as a callable or as ``"package.module:function"``;
* :class:`ModelObject`: a model already in memory (``rfbench.run(models={"mine": net})``);
* :class:`CheckpointSlot`: a model that exists only as a published file the user must give (the cifar suite).

``MODELS`` holds models registered by name (:func:`register_model`), which a run can add to any suite they fit.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rfbench.files import sha1_files
from rfbench.models.cache import TRAINING_CODE_VERSION, Cache
from rfbench.models.checkpoint import config_hash, jsonable, stated_id, weights_sha1
from rfbench.models.diffusers_folder import folder_sha1
from rfbench.models.edm import EDMFlow, load_edm_pickle
from rfbench.models.labels import SEEDS
from rfbench.models.formats import (FLAVORS, FORMATS, check_rfbench_weights, file_config, file_input_shape, file_kind,
                                    load_model, sniff)
from rfbench.protocols import KINDS, is_diffusion_model
from rfbench.plugins import import_module_here, module_file
from rfbench.registry import Registry


def check_kind(kind: Any, what: str = "kind") -> str:
    if kind not in KINDS:
        raise ValueError(f"{what} must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class ModelIdentity:
    """What a model is, for result rows: ``source`` (model_source column), ``id`` (model_id: part of the cell key
    and of the gate's identity), ``checkpoint`` (model_checkpoint: a file's name and sha1). ``resumable``: False
    for models whose content rfbench cannot identify (objects in memory): their cells are always recomputed."""

    source: str
    id: str
    checkpoint: str | None = None
    resumable: bool = True


@dataclass(frozen=True)
class LoadContext:
    """What :meth:`ModelSource.load` may use: the suite (its problem holds the training data), the trained-model
    cache (``cache.progress`` shows a recipe's training as the run shows progress: ``with
    ctx.cache.progress.training(name, config) as job: fit(..., progress=job)``), the device, and a logger for one
    line per train or load."""

    suite: Any
    cache: Cache
    device: torch.device
    log: Callable[[str], None] = print


class ModelSource:
    """Interface of a suite's model; see the module docstring. ``probe``: whether loading it is cheap enough to
    check its input shape before any work when :meth:`input_shape` cannot say (never for a recipe: loading one
    trains it)."""

    kind: str = "flow"
    probe: bool = False

    def describe(self) -> str:
        """One line for ``--list`` and ``--dry-run``."""
        return type(self).__name__

    def identity(self, suite) -> ModelIdentity:
        raise NotImplementedError

    # its identity covers the weights it loads only once it is loaded (a factory): :meth:`identify` loads it, and the
    # gate's check before a run leaves it to the check after it
    identified_by_loading: bool = False

    def identify(self, ctx: LoadContext) -> ModelIdentity:
        """Its identity in a run's rows and cell keys: :meth:`identity`, for a source whose identity does not need
        it loaded."""
        return self.identity(ctx.suite)

    def input_shape(self, suite) -> tuple[int, ...] | None:
        """The shape of one input sample, known without loading the model (None: probe the loaded model)."""
        return None

    def missing(self, name: str) -> str | None:
        """A one-line reason why a run cannot start with this model (an input that must be given), else None."""
        return None

    def load(self, ctx: LoadContext) -> Any:
        raise NotImplementedError

    def with_file(self, path: str | Path) -> "ModelSource":
        """The same model loaded from a file instead (``--checkpoint MODEL=PATH``)."""
        return ModelFile(path, kind=self.kind)


class Recipe(ModelSource):
    """A model rfbench trains: :meth:`spec` is everything that determines it (its family, network and training
    configuration); its hash is the model's id, so changing the recipe recomputes its cells and the gate refuses
    to compare across it. Subclasses implement :meth:`spec`, :meth:`load` (usually through
    ``ctx.cache.network(...)``) and, when they can, :meth:`input_shape`."""

    def spec(self) -> dict:
        raise NotImplementedError

    def recipe_hash(self) -> str:
        return config_hash({"training_code_version": TRAINING_CODE_VERSION, **jsonable(self.spec())})[:12]

    def identity(self, suite) -> ModelIdentity:
        return ModelIdentity("recipe", f"recipe:{self.recipe_hash()}")

    def describe(self) -> str:
        return f"{self.kind}, trained by rfbench (recipe {self.recipe_hash()})"


def content_sha1(path: str | Path) -> str:
    """SHA-1 of a model file, or of a diffusers folder's configs and weights."""
    return folder_sha1(path) if Path(path).is_dir() else sha1_files(path)


class ModelFile(ModelSource):
    """A model in a file (or a diffusers folder), in any format :mod:`rfbench.models.formats` reads.

    ``kind``: what it is sampled as (default: what the file says; an official or TorchScript file is a flow).
    ``flavor`` (official score-SDE files): "vp" or "subvp" (probability-flow ODE); default "rf".
    ``network``: the DDPM++ configuration of an official file (default: the published CIFAR-10 one).
    ``class_label`` (class-conditional EDM network pickles): the class of every sample, or "seeds" (each sample's
    class drawn from its seed, :mod:`rfbench.models.labels`), part of the model's identity (default None:
    unconditional)."""

    def __init__(self, path: str | Path, kind: str | None = None, flavor: str | None = None, network=None,
                 class_label: int | str | None = None):
        self.path = Path(path).expanduser()
        if kind is not None:
            check_kind(kind)
        if flavor is not None and flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
        if class_label is not None and class_label != SEEDS and (
                isinstance(class_label, bool) or not isinstance(class_label, int) or class_label < 0):
            raise ValueError(f"class_label must be an integer >= 0, {SEEDS!r} (each sample's class from its seed) or "
                             f"None (unconditional), got {class_label!r}")
        self._kind, self.flavor, self.network, self.class_label = kind, flavor, network, class_label
        self._sha1: str | None = None
        self.probe = True
        self.claimed: str | None = None    # the suite model this file is loaded as (--checkpoint MODEL=PATH)

    def claiming(self, name: str) -> "ModelFile":
        """This file, loaded as the suite's model ``name``: a file that says it is another model is refused."""
        self.claimed = name
        return self

    def __repr__(self) -> str:
        label = "" if self.class_label is None else f", class_label={self.class_label!r}"
        return f"ModelFile({str(self.path)!r}, kind={self._kind!r}, flavor={self.flavor!r}{label})"

    @property
    def kind(self) -> str:
        return self._kind or (file_kind(self.path) if self.path.exists() else "flow")

    @property
    def explicit_kind(self) -> str | None:
        """The kind asked for (None: what the file says)."""
        return self._kind

    def format(self) -> str:
        return FORMATS[sniff(self.path)]

    def sha1(self) -> str:
        if self._sha1 is None:
            self._sha1 = content_sha1(self.path)
        return self._sha1

    def describe(self) -> str:
        return f"{self.kind}, from {self.path}"

    def identity(self, suite) -> ModelIdentity:
        name = f"{self.path.name}/" if self.path.is_dir() else self.path.name
        if self.class_label is None:
            label = tag = ""
        elif self.class_label == SEEDS:
            label, tag = ", classes from the seeds", ":classes=seeds"
        else:
            label, tag = f", class {self.class_label}", f":class{self.class_label}"
        return ModelIdentity(self.format(), f"sha1:{self.sha1()[:12]}{tag}", f"{name} (sha1 {self.sha1()[:12]}{label})")

    def input_shape(self, suite) -> tuple[int, ...] | None:
        return file_input_shape(self.path, self.network)

    def missing(self, name: str) -> str | None:
        if not self.path.exists():
            return f"checkpoint for {name} not found: {self.path} (--checkpoint or --model {name}=PATH)"
        return None

    def check(self, suite=None) -> None:
        """The file must be what it is loaded as: its own kind the one asked for (an rfbench checkpoint, a diffusers
        folder and an EDM pickle say what they are; an official or TorchScript file does not), an EDM pickle's
        network rfbench's own (built from the file's arguments, checked against its layers and tensors) and, for an
        rfbench checkpoint loaded as a suite's model, its recorded model name that model's and its recorded problem
        the suite's."""
        fmt = sniff(self.path)
        as_what = f" loaded as {self.claimed}" if self.claimed else ""
        if self._kind is not None and fmt in ("rfbench", "diffusers", "edm"):
            own = file_kind(self.path)
            if own != self._kind:
                raise ValueError(f"{self.path} ({FORMATS[fmt]}) holds a {own} model, not a {self._kind} "
                                 f"one{as_what}")
        if self.class_label is not None and fmt != "edm":
            raise ValueError(f"{self.path} is a {FORMATS[fmt]}; a class label applies to class-conditional EDM "
                             f"network pickles only")
        if fmt == "edm":        # built and checked against the file, key by key, before any work
            EDMFlow(load_edm_pickle(self.path), self.class_label)
        if fmt != "rfbench":
            return
        check_rfbench_weights(self.path)
        if self.claimed is None:
            return
        config = file_config(self.path)
        recorded = config.get("model") if isinstance(config.get("model"), str) else None
        if recorded is not None and recorded != self.claimed:
            raise ValueError(f"{self.path} is an rfbench checkpoint of model {recorded!r}, not of {self.claimed!r}; "
                             f"give {self.claimed}'s own file, or add it as another model with --model "
                             f"{recorded}-file={self.path}")
        problem = getattr(getattr(suite, "problem", None), "to_dict", None)
        if recorded is not None and isinstance(config.get("problem"), dict) and callable(problem):
            try:
                expected = jsonable(problem())
            except Exception:     # its data missing: said once, by the missing-inputs check
                return
            if jsonable(config["problem"]) != expected:
                differing = sorted(k for k in set(expected) | set(config["problem"])
                                   if config["problem"].get(k) != expected.get(k))
                raise ValueError(f"{self.path} is {recorded} trained on another problem than suite "
                                 f"{suite.name}'s (differing: {', '.join(differing)}); give the checkpoint trained "
                                 f"on this suite's data")

    def load(self, ctx: LoadContext) -> Any:
        return load_model(self.path, ctx.device, flavor=self.flavor, network=self.network,
                          class_label=self.class_label)

    def with_file(self, path: str | Path) -> "ModelSource":
        return ModelFile(path, kind=self._kind, flavor=self.flavor, network=self.network,
                         class_label=self.class_label)


FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class Factory(ModelSource):
    """A function that returns the model: a callable, or ``"package.module:function"`` imported when loaded.
    It is called with the keywords it takes among ``suite``, ``device`` and ``cache`` (the model cache).

    Its id (:meth:`identify`, which loads it) is its qualified name, the sha1 of its module's file and the sha1 of
    the loaded model's parameters and buffers (:func:`weights_sha1`), so an edited factory, or a file it loads
    that was trained again, is another model. A model with no torch module behind it has only the first two. A
    factory may state the id itself instead, as a string attribute ``model_id`` on the model it returns (a
    published checkpoint's name and revision, say): ``factory:NAME@MODEL_ID``; it then answers for that id
    changing whenever the weights do."""

    identified_by_loading = True

    def __init__(self, fn: Callable[..., Any] | str, kind: str = "flow", description: str = ""):
        if isinstance(fn, str):
            if not FACTORY_PATTERN.match(fn):
                raise ValueError(f"a factory is given as package.module:function, got {fn!r}")
        elif not callable(fn):
            raise TypeError(f"a factory must be a callable or 'package.module:function', got {type(fn).__name__}")
        self.fn, self.kind, self.description = fn, check_kind(kind), description
        self._loaded: dict[str, Any] = {}
        self.probe = True

    def __repr__(self) -> str:
        return f"Factory({self.qualified_name()!r}, kind={self.kind!r})"

    def qualified_name(self) -> str:
        if isinstance(self.fn, str):
            return self.fn
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', type(self.fn).__name__)}"

    def resolve(self) -> Callable[..., Any]:
        """The function: imported from its module, found on the Python path or else in the current folder (as a
        ``--plugin`` file is); a module that cannot be imported is an ImportError "cannot import module X: why"."""
        if not isinstance(self.fn, str):
            return self.fn
        module_name, _, attr = self.fn.partition(":")
        obj: Any = import_module_here(module_name)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ImportError(f"factory {self.fn}: {module_name} has no {attr}") from None
        if not callable(obj):
            raise TypeError(f"factory {self.fn} is a {type(obj).__name__}, not a callable")
        return obj

    def check(self, suite=None) -> None:
        """Import the function (not call it): a module that cannot be imported is said before any other check."""
        self.resolve()

    def _module_sha1(self) -> str:
        origin = module_file(self.qualified_name().partition(":")[0])
        return sha1_files(origin)[:12] if origin is not None else "unknown"

    def describe(self) -> str:
        return self.description or f"{self.kind}, from the factory {self.qualified_name()}"

    def identity(self, suite) -> ModelIdentity:
        """Its identity before it is loaded: its name and its module's sha1 (see :meth:`identify`)."""
        name = self.qualified_name()
        return ModelIdentity("factory", f"factory:{name}@sha1:{self._module_sha1()}", name)

    def identify(self, ctx: LoadContext) -> ModelIdentity:
        """Its identity once loaded (see the class docstring). A factory that fails to load gets its identity before
        loading, not resumable: its cells fail when the run loads it, and say why."""
        before = self.identity(ctx.suite)
        try:
            model = self.load(ctx)
        except Exception:
            return dataclasses.replace(before, resumable=False)
        stated = stated_id(model, f"factory {self.qualified_name()}")
        if stated is not None:
            return dataclasses.replace(before, id=f"factory:{self.qualified_name()}@{stated}")
        weights = weights_sha1(model)
        return before if weights is None else dataclasses.replace(before, id=f"{before.id}+weights:{weights[:12]}")

    def load(self, ctx: LoadContext) -> Any:
        key = str(ctx.device)
        if key not in self._loaded:
            fn = self.resolve()
            available = {"suite": ctx.suite, "device": ctx.device, "cache": ctx.cache}
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):
                params = {}
            unknown = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in available
                       and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
            if unknown:
                raise TypeError(f"factory {self.qualified_name()} needs {', '.join(unknown)}; a factory may take "
                                f"suite, device and cache")
            model = fn(**{k: v for k, v in available.items() if k in params})
            if hasattr(model, "to") and callable(model.to):
                model = model.to(ctx.device)
            self._loaded[key] = model
        return self._loaded[key]


class ModelObject(ModelSource):
    """A model object already in memory (a flow ``model(x, t)`` or a DiffusionModel). Its id is its class and the
    sha1 of its parameters and buffers (or the ``model_id`` it states, as a factory's model may), so the gate
    refuses to compare across changed weights; rfbench cannot identify the rest of it (its code), so its cells are
    never kept by a resumed run."""

    def __init__(self, model: Any, kind: str | None = None):
        if model is None or not callable(model):
            raise TypeError(f"a model must be callable as model(x, t) (or a DiffusionModel), got "
                            f"{type(model).__name__}")
        self.model = model
        self.probe = True
        self.kind = check_kind(kind or getattr(model, "kind", None)
                               or ("diffusion" if is_diffusion_model(model) else "flow"))

    def describe(self) -> str:
        return f"{self.kind}, a {type(self.model).__name__} object"

    def identity(self, suite) -> ModelIdentity:
        name = type(self.model).__qualname__
        stated = stated_id(self.model, f"model object {name}")
        if stated is None:
            weights = weights_sha1(self.model)
            stated = None if weights is None else f"weights:{weights[:12]}"
        return ModelIdentity("python object", f"object:{name}" + (f"@{stated}" if stated else ""), None,
                             resumable=False)

    def input_shape(self, suite) -> tuple[int, ...] | None:
        shape = getattr(self.model, "input_shape", None)
        return tuple(shape) if shape is not None else None

    def load(self, ctx: LoadContext) -> Any:
        if hasattr(self.model, "to") and callable(self.model.to):
            self.model.to(ctx.device)
        return self.model


class CheckpointSlot(ModelSource):
    """A model that exists only as a published file the user gives (``--model NAME=PATH`` or
    ``--checkpoint-dir``); nothing trains it. ``flavor`` and ``network`` say how an official file of it is read;
    ``file_names``: the published file's own names, which ``--checkpoint-dir`` also finds it under (besides
    ``NAME.pth`` and ``NAME.pt``)."""

    def __init__(self, kind: str = "flow", flavor: str | None = None, network=None, description: str = "",
                 folder: bool = False, file_names: tuple[str, ...] = ()):
        self.kind, self.flavor, self.network = check_kind(kind), flavor, network
        self.description, self.folder = description, folder
        if isinstance(file_names, str) or not all(isinstance(n, str) and n and "/" not in n for n in file_names):
            raise ValueError(f"file_names must be a tuple of file names (no folders), got {file_names!r}")
        self.file_names = tuple(file_names)

    def describe(self) -> str:
        return self.description or f"{self.kind}, from a checkpoint file"

    def identity(self, suite) -> ModelIdentity:
        return ModelIdentity("checkpoint slot", "missing")

    def input_shape(self, suite) -> tuple[int, ...] | None:
        return None

    def missing(self, name: str) -> str:
        where = " or ".join((f"{name}.pth",) + self.file_names) + (f" or a diffusers folder {name}/" if self.folder
                                                                   else "")
        return (f"no checkpoint for {name}: pass --checkpoint {name}=PATH or put {where} in --checkpoint-dir (or "
                f"leave it out with --models)")

    def load(self, ctx: LoadContext) -> Any:
        raise FileNotFoundError(self.missing("this model"))

    def with_file(self, path: str | Path) -> ModelSource:
        return ModelFile(path, kind=self.kind, flavor=self.flavor, network=self.network)


# -- models registered by name, addable to any suite they fit ----------------------------------------------------

MODELS: Registry[ModelSource] = Registry("model")


def as_source(value: Any, kind: str | None = None, what: str = "model") -> ModelSource:
    """A ModelSource from what a user passes: a ModelSource; a path (file or folder); ``"package.module:function"``;
    or a model object (anything callable as ``model(x, t)``, or a DiffusionModel)."""
    if isinstance(value, ModelSource):
        return value
    if isinstance(value, (str, Path)):
        text = str(value)
        if Path(text).expanduser().exists():
            hint_kind = kind if kind in KINDS else None
            return ModelFile(text, kind=hint_kind, flavor=kind if kind in FLAVORS else None)
        if FACTORY_PATTERN.match(text):
            return Factory(text, kind=kind if kind in KINDS else "flow")
        raise ValueError(f"{what}: {text!r} is neither an existing file or folder nor package.module:function")
    return ModelObject(value, kind=kind)


def register_model(name: str, source: Any, *, kind: str | None = None) -> ModelSource:
    """Register a model under ``name`` so that any run can add it to a suite it fits (``--models NAME``, or
    ``rfbench.run(models=[..., NAME])``). ``source``: a :class:`ModelSource` (a :class:`Recipe` subclass for a model
    rfbench should train and cache), a factory function (called with the keywords it takes among suite, device
    and cache), a path, or ``"package.module:function"``. ``kind`` (flow, one-step, diffusion) for factories and
    files whose kind cannot be read from them."""
    if isinstance(source, ModelSource):
        if kind is not None and kind != source.kind:
            raise ValueError(f"model {name}: kind {kind!r} given for a source of kind {source.kind!r}")
        entry = source
    elif callable(source) and not isinstance(source, torch.nn.Module):
        entry = Factory(source, kind=kind or "flow")
    else:
        entry = as_source(source, kind, what=f"model {name}")
    return MODELS.add(name, entry)

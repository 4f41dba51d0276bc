"""Plugins: Python files or modules that register solvers, models, metrics, datasets, extractors or suites.

Three ways in, one mechanism (importing the plugin runs its registrations, e.g. ``@rfbench.register_solver``):

* ``--plugin my_solver.py`` (a file) or ``--plugin mypackage.rfbench_plugin`` (a module), repeatable;
  :func:`load_plugin`;
* installed packages, through the entry-point group ``rfbench.plugins`` (``[project.entry-points."rfbench.plugins"]
  myname = "mypackage.module"``, or ``"mypackage.module:register"`` for a function to call);
  :func:`load_entry_points`. rfbench's own baselines are the first such plugin (see pyproject.toml);
* Python: ``rfbench.run(..., plugins=["my_solver.py"])`` or calling the register functions directly.

Every entry remembers where it came from (``--list`` shows it). A plugin that fails to import, or registers a name
that is taken, is one :class:`PluginError` naming the plugin and the cause, and leaves nothing registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path

from rfbench.registry import DuplicateNameError, registering_from

ENTRY_POINT_GROUP = "rfbench.plugins"

_loaded: dict[str, str] = {}        # plugin key (resolved file or module name) -> origin label
_entry_points_loaded = False


class PluginError(RuntimeError):
    """A plugin could not be loaded: it failed to import, or registered a name that is already taken."""


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec or Path(spec).is_file()


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _where(exc: BaseException, path: str | None) -> str:
    """`` (file:line)`` of the innermost frame inside the plugin, when there is one."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if path is None or Path(f.filename).resolve() == Path(path).resolve()]
    return f" ({inside[-1].filename}:{inside[-1].lineno})" if inside else ""


def load_plugin(spec: str) -> str:
    """Import the plugin ``spec`` (a ``.py`` file or a module name) once; returns its origin label."""
    if not isinstance(spec, str) or not spec:
        raise PluginError(f"--plugin takes a .py file or a module name, got {spec!r}")
    if _is_file_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PluginError(f"--plugin {spec}: no such file")
        key, label = str(path.resolve()), f"--plugin {spec}"
    else:
        key, label = spec, f"--plugin {spec}"
    if key in _loaded:
        return _loaded[key]
    try:
        with registering_from(label):
            if _is_file_spec(spec):
                _import_file(path)
            else:
                importlib.import_module(spec)
    except DuplicateNameError as exc:
        raise PluginError(f"{label}: {exc}") from None
    except ModuleNotFoundError as exc:
        if not _is_file_spec(spec) and exc.name is not None and spec.startswith(exc.name):
            raise PluginError(f"{label}: no module named {exc.name!r} and no file {spec!r}") from None
        raise PluginError(f"{label}: importing it failed: ModuleNotFoundError: {exc}"
                          f"{_where(exc, key if _is_file_spec(spec) else None)}") from None
    except Exception as exc:
        raise PluginError(f"{label}: importing it failed: {type(exc).__name__}: {_one_line(exc)}"
                          f"{_where(exc, key if _is_file_spec(spec) else None)}") from None
    _loaded[key] = label
    return label


def _import_file(path: Path) -> None:
    """Import a plugin file as a module of its own (named after its path, so two files named alike do not clash)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"rfbench_plugin_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def load_entry_points() -> list[str]:
    """Load every installed plugin of the entry-point group ``rfbench.plugins`` (once per process); returns their
    origin labels. An entry point names a module (imported) or ``module:function`` (imported, then called)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return [label for key, label in _loaded.items() if key.startswith("entry point ")]
    _entry_points_loaded = True
    labels = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        key = label = f"entry point {ep.name}"
        if key in _loaded:
            continue
        try:
            with registering_from(label):
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type(sys)):
                    obj()
        except DuplicateNameError as exc:
            raise PluginError(f"{label} ({ep.value}): {exc}") from None
        except Exception as exc:
            raise PluginError(f"{label} ({ep.value}): loading it failed: {type(exc).__name__}: "
                              f"{_one_line(exc)}") from None
        _loaded[key] = label
        labels.append(label)
    return labels


def load_plugins(specs=()) -> list[str]:
    """The installed plugins (entry points, rfbench's baselines among them), then ``specs`` in order."""
    labels = load_entry_points()
    return labels + [load_plugin(spec) for spec in specs]


def import_module_here(module_name: str):
    """Import ``module_name`` from the Python path, or else from the current folder (as a ``--plugin`` file is found
    beside the user); a module that cannot be imported is one ImportError "cannot import module X: why"."""
    try:
        with _current_folder_importable():
            return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):   # the module itself
            raise ImportError(f"cannot import module {module_name}: no module named {exc.name!r} on the Python "
                              f"path nor in the current folder {os.getcwd()}") from None
        raise ImportError(f"cannot import module {module_name}: ModuleNotFoundError: {exc}") from None
    except Exception as exc:        # the module's own code failed (a missing dependency, a syntax error, ...)
        text = " ".join(str(exc).split())
        raise ImportError(f"cannot import module {module_name}: {type(exc).__name__}: {text}") from None


def module_file(module_name: str) -> str | None:
    """The file :func:`import_module_here` would import ``module_name`` from, without importing it (None: none)."""
    try:
        with _current_folder_importable():
            spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None)
    return origin if origin and Path(origin).is_file() else None


@contextlib.contextmanager
def _current_folder_importable():
    """The current folder at the end of the Python path for the block (when it is not there already), so that a
    factory's module beside the user is found, as ``python -m`` would find it; installed modules still come first."""
    cwd = os.getcwd()
    if "" in sys.path or cwd in sys.path:
        yield
        return
    sys.path.append(cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)

"""A small name -> object registry with helpful errors, and where each entry came from.

Used for solvers, models, metrics, datasets, feature extractors and suites: decorator registration, duplicate names
refused (saying who registered the name first), unknown names answered with "did you mean" and the list of what
exists. Every entry remembers its origin: the plugin being loaded (:func:`registering_from`, set by
:mod:`rfbench.plugins`), else the module that registered it, so ``--list`` can say where each solver or model came
from.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

# the plugin being loaded (innermost last), and what it registered so far: (registry, name) pairs
_ORIGINS: list[tuple[str, list[tuple["Registry", str]]]] = []


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the close matches and every known name."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A name that is already registered: the message says by whom."""


@contextlib.contextmanager
def registering_from(origin: str):
    """Entries registered inside the block record ``origin`` (e.g. "--plugin my_solver.py"). If the block raises,
    what it registered is removed again, so a plugin that fails half-way leaves no half of itself behind."""
    added: list[tuple[Registry, str]] = []
    _ORIGINS.append((origin, added))
    try:
        yield
    except BaseException:
        for registry, name in reversed(added):
            registry.remove(name)
        raise
    finally:
        _ORIGINS.pop()


def _caller_module() -> str:
    """The module that called a registration: the first frame outside the registry and the register_* helpers."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if module != __name__ and not frame.f_code.co_name.startswith(("register", "deco", "add")):
            return module
        frame = frame.f_back
    return "?"


def describe_origin(origin: str) -> str:
    """``rfbench`` for rfbench's own modules, else the origin as recorded."""
    return "rfbench" if origin == "rfbench" or origin.startswith("rfbench.") else origin


class Registry(Generic[T]):
    """Maps names to objects of one kind (``what`` is used in error messages, e.g. "solver")."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, obj: T, origin: str | None = None) -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise DuplicateNameError(f"{self.what} {name!r} is already registered (by "
                                     f"{describe_origin(self._origins[name])}); choose another name")
        self._items[name] = obj
        if origin is None:
            origin = _ORIGINS[-1][0] if _ORIGINS else _caller_module()
        self._origins[name] = origin
        if _ORIGINS:
            _ORIGINS[-1][1].append((self, name))
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def remove(self, name: str) -> T:
        """Unregister ``name`` (an unknown name is an error) and return what it held."""
        obj = self[name]
        del self._items[name]
        del self._origins[name]
        return obj

    def origin(self, name: str) -> str:
        """Where ``name`` was registered: a plugin ("--plugin FILE", "entry point NAME") or a module."""
        self[name]
        return self._origins[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):   # TypeError: an unhashable name, such as a list
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        known = sorted(self._items)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"Unknown {self.what} {name!r}.{hint} Known {self.what}s: {', '.join(known) or 'none'}"

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

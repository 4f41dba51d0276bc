"""A run's solver options (``--solver-option [SOLVER:]KEY=VALUE``, ``rfbench.run(solver_options=...)``): parsed
once, then applied to the run's cells so that one setting names one cell however it is spelled (defaults dropped,
0 and 0.0 alike, keys in the solver's own order, one solver's option over the same option for all)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rfbench.samplers import SOLVERS, solver_defaults, solver_options
from rfbench.suites.base import Cell


def _value(text: str) -> Any:
    """An option's value from the command line: an int, a float, true/false, or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_solver_options(options: Any) -> tuple[tuple[str | None, str, Any], ...]:
    """``solver_options`` of a run: "KEY=VALUE" or "SOLVER:KEY=VALUE" strings (the CLI's --solver-option), a mapping
    {key: value} (every solver that takes it) or {solver: {key: value}}, or (solver or None, key, value) triples."""
    if isinstance(options, dict):
        items: list = []
        for name, value in options.items():
            if isinstance(value, dict):
                items += [(name, k, v) for k, v in value.items()]
            else:
                items.append((None, name, value))
        options = items
    if isinstance(options, str):
        options = (options,)
    out = []
    for item in options:
        if isinstance(item, str):
            head, sep, text = item.partition("=")
            solver, colon, key = head.rpartition(":")
            if not sep or not key or not text or (colon and not solver):
                raise ValueError(f"--solver-option takes KEY=VALUE or SOLVER:KEY=VALUE (e.g. rtol=1e-4, "
                                 f"unipc:order=3), got {item!r}")
            item = (solver or None, key, _value(text))
        if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[1], str)
                and (item[0] is None or isinstance(item[0], str))):
            raise TypeError(f"solver_options: expected KEY=VALUE strings, a mapping or (solver, key, value) triples, "
                            f"got {item!r}")
        if item[0] is not None and item[0] not in SOLVERS:
            raise ValueError(f"--solver-option {item[0]}:{item[1]}: {SOLVERS.unknown_message(item[0])}")
        out.append(item)
    scopes = [(solver, key) for solver, key, _ in out]
    twice = sorted({f"{'' if solver is None else solver + ':'}{key}" for solver, key in scopes
                    if scopes.count((solver, key)) > 1})
    if twice:
        raise ValueError(f"--solver-option {', '.join(twice)} given twice; give each option once (SOLVER:KEY=VALUE "
                         f"for one solver takes precedence over KEY=VALUE for all)")
    return tuple(out)


def with_options(cells: tuple[Cell, ...], options) -> tuple[Cell, ...]:
    """Each cell with the run's solver options that its solver takes (replacing the suite's value of an option it
    sets); an option no cell of the run takes is an error naming the solvers that do take it."""
    if not options:
        return cells
    used = [False] * len(options)
    out = []
    general = [i for i, o in enumerate(options) if o[0] is None]
    specific = [i for i, o in enumerate(options) if o[0] is not None]
    for cell in cells:
        allowed = solver_options(cell.solver)
        defaults = solver_defaults(cell.solver)
        merged, touched = dict(cell.options), False
        for i in general + specific:      # one solver's own option wins over the same option for all
            solver, key, value = options[i]
            if (solver is None or solver == cell.solver) and key in allowed:
                default = defaults[key]
                if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)      # 0 and 0.0 name one cell
                if type(value) is type(default) and value == default:
                    merged.pop(key, None)     # the solver's default: the cell the suite has without the option
                else:
                    merged[key] = value
                used[i] = touched = True
        if touched:   # in the solver's own order, so that the spelling of a command does not change a cell's key
            merged = {key: merged[key] for key in sorted(merged, key=lambda k: allowed.index(k)
                                                         if k in allowed else len(allowed))}
        out.append(dataclasses.replace(cell, options=tuple(merged.items())))
    for (solver, key, value), ok in zip(options, used):
        if ok:
            continue
        named = f"{'' if solver is None else solver + ':'}{key}={value}"
        takers = [s for s in SOLVERS.names() if key in solver_options(s)]
        if solver is not None and key not in solver_options(solver):
            why = f"{solver} takes no option {key!r} (it takes: {', '.join(solver_options(solver)) or 'none'})"
        else:
            why = (f"no cell of this run has {solver}" if solver is not None else
                   f"no solver of this run ({', '.join(sorted({c.solver for c in cells}))}) takes {key!r}")
        raise ValueError(f"--solver-option {named}: {why}; solvers that take {key!r}: {', '.join(takers) or 'none'}"
                         f"{' (add one with --solvers)' if takers else ''}")
    return tuple(dict.fromkeys(out))

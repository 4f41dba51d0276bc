"""The code's layout: imports run one way. rfbench never imports baselines, examples or tests (they import rfbench
and register, as any plugin does); no module imports another that imports it back, at module level or inside a
function; and rfbench's modules never take a name from the package itself (``from rfbench import sample``), which
would tie them to the order in which ``rfbench/__init__.py`` runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rfbench", "baselines")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import of ``path``; ``from a import b`` counts as importing
    ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        found += [(name, id(node) in top) for name in names]
    return found


def graph(module_level_only: bool) -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, at_top in imports(path, known):
            if (at_top or not module_level_only) and target in known and target != name:
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_rfbench_never_imports_baselines_examples_or_tests():
    known = modules()
    bad = [(name, target) for name, path in known.items() if name.split(".")[0] == "rfbench"
           for target, _ in imports(path, known) if target.split(".")[0] in ("baselines", "examples", "tests")]
    assert bad == []


def test_no_import_cycles_at_module_level_or_inside_functions():
    assert cycles(graph(module_level_only=True)) == []
    # the package's own __init__ imports its public names from the modules; a module importing the package back
    # (``import rfbench`` or ``from rfbench import X``) would close a cycle through it, so it is left out of this check
    edges = graph(module_level_only=False)
    edges["rfbench"] = set()
    assert cycles(edges) == []


def test_rfbench_modules_take_no_names_from_the_package_itself():
    known = modules()
    bad = []
    for name, path in known.items():
        if not name.startswith("rfbench."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "rfbench" and node.level == 0:
                bad += [(name, a.name) for a in node.names if f"rfbench.{a.name}" not in known]
            if isinstance(node, ast.Import) and any(a.name == "rfbench" for a in node.names):
                bad.append((name, "import rfbench"))
    assert bad == []

"""dinogeo's own imports run one way: no cycle, and no import against the layer order.

Every ``import``/``from ... import`` of a ``dinogeo`` module is read with ``ast`` (module level,
inside functions and under ``TYPE_CHECKING`` alike), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dinogeo

PACKAGE = Path(dinogeo.__file__).resolve().parent

#: the layers, lowest first; a module may import its own layer and the layers below it
LAYERS: list[set[str]] = [
    {"dinogeo", "dinogeo.errors", "dinogeo._paths", "dinogeo.config", "dinogeo.progress"},
    {"dinogeo.data", "dinogeo.samples"},
    {"dinogeo.models"},
    {"dinogeo.ssl", "dinogeo.labels", "dinogeo.inference", "dinogeo.tracking"},
    {"dinogeo.trainers"},
    {"dinogeo.demo"},
    {"dinogeo.cli"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The dinogeo modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import mod`` imports the module; ``from pkg import name`` the package
            targets = [f"{module}.{a.name}" for a in node.names]
            if not all(t in known for t in targets):
                targets.append(module)
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("dinogeo"):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> int:
    for rank, members in enumerate(LAYERS):
        for member in members:
            if name == member or (member != "dinogeo" and name.startswith(member + ".")):
                return rank
    raise AssertionError(f"{name} is in no layer: add it to LAYERS (and docs/architecture.md)")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_imports_follow_the_layers():
    wrong = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(graph().items())
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert wrong == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """A function-level import against the order, and a two-module cycle, are both caught."""
    edges = {"dinogeo.data.a": {"dinogeo.trainers.b"}, "dinogeo.trainers.b": {"dinogeo.data.a"}}
    assert cycles(edges) == [["dinogeo.data.a", "dinogeo.trainers.b"]]
    source = tmp_path / "mod.py"
    source.write_text(
        "def f():\n    from dinogeo.cli import main\n    from . import readers\n"
        "    import dinogeo.models.card\n"
    )
    known = {"dinogeo.cli", "dinogeo.cli.main", "dinogeo.data.readers", "dinogeo.models.card"}
    found = imports("dinogeo.data.mod", source, known)
    assert found == {"dinogeo.cli.main", "dinogeo.data.readers", "dinogeo.models.card"}
    assert layer("dinogeo.cli.main") > layer("dinogeo.data.readers")

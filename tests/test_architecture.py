"""The import graph of jaxkd/ (read with `ast`, nothing imported): no cycles, and no module imports from a layer
above its own. DEVELOPERS.md's map states the same layers; a new module belongs to the layer of its prefix.

Every `import` counts, at the top of a module or inside a function (a lazy import is still a dependency). A
package's implicit import of its parent (`import a.b` runs `a/__init__`) is not an edge: it is how Python loads
packages, not a choice of the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxkd"

# Lowest first. A module may import from its own layer and the layers below. The longest matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("jaxkd.errors", "jaxkd.paths", "jaxkd.cache")),
    ("config", ("jaxkd.config",)),
    ("numerics and data", ("jaxkd.models", "jaxkd.losses", "jaxkd.data")),
    ("interop", ("jaxkd.interop",)),
    ("training kit", ("jaxkd.train.steps", "jaxkd.train.optim", "jaxkd.train.checkpoint", "jaxkd.train.reporting",
                      "jaxkd.train.writers")),
    ("tasks", ("jaxkd.tasks",)),
    ("trainer", ("jaxkd.train",)),
    ("commands", ("jaxkd", "jaxkd.train.__main__", "jaxkd.data.__main__", "jaxkd.evaluate", "jaxkd.predict",
                  "jaxkd.convert", "jaxkd.summary", "jaxkd.faults", "jaxkd.study", "jaxkd.bench", "jaxkd.analyze")),
    ("presets", ("jaxkd.configs",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
PACKAGES = {_module_name(p) for p in PKG.rglob("__init__.py")}


def _resolve(name: str) -> str | None:
    """The jaxkd module `name` refers to (a module, or the module defining an attribute `pkg.attr`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = module if module in PACKAGES else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n == "jaxkd" or n.startswith("jaxkd."):
                target = _resolve(n)
                if target and target != module and not module.startswith(target + "."):
                    out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py: add its prefix to LAYERS"
    return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_graph_is_read():
    assert len(MODULES) > 60
    assert "jaxkd.train.steps" in GRAPH["jaxkd.train.loop"]
    assert "jaxkd.interop.yaml_import" in GRAPH["jaxkd.convert"]  # (imported inside a function: it counts)
    assert "jaxkd.tasks.supervised" in GRAPH["jaxkd.tasks"]


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_cycle_finder_finds_a_cycle():  # negative control
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    mine = layer_of(module)
    up = sorted(t for t in GRAPH[module] if layer_of(t) > mine)
    assert not up, (f"{module} (layer {LAYERS[mine][0]!r}) imports {up} from a higher layer "
                    f"({', '.join(repr(LAYERS[layer_of(t)][0]) for t in up)})")


def test_layer_rule_would_fail():  # negative control: the checker sees an upward import
    assert layer_of("jaxkd.tasks.kd") > layer_of("jaxkd.train.checkpoint")
    assert layer_of("jaxkd.convert") > layer_of("jaxkd.tasks.kd")

"""The package's imports point one way: every module's imports (module-level, inside functions and
under TYPE_CHECKING alike) are read with `ast`, and the test fails on an import of a higher layer
or on any cycle, naming the modules.

    entry points -> model -> session -> generation -> tokenizer, sampling, chat, convert, core
        -> architectures -> file formats -> quant -> types, errors, native

Modules of one layer may import each other, as long as no cycle forms.
"""
from __future__ import annotations

import ast
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyllm")

# (layer, module or package prefix), lowest layer first; a module takes its longest matching prefix
LAYERS: list[tuple[int, str]] = [
    (0, "pyllm.errors"), (0, "pyllm.types"), (0, "pyllm._native"), (0, "pyllm._core"),
    (1, "pyllm.quant"),
    (2, "pyllm.formats"),
    (3, "pyllm.arch"),
    (4, "pyllm.tokenizer"), (4, "pyllm.sampling"), (4, "pyllm.chat"), (4, "pyllm.convert"), (4, "pyllm.core"),
    (5, "pyllm.generation"),
    (6, "pyllm.session"),
    (7, "pyllm.model"),
    (8, "pyllm"), (8, "pyllm.__main__"), (8, "pyllm.cli"), (8, "pyllm.run"), (8, "pyllm.perplexity"),
    (8, "pyllm.fetch"), (8, "pyllm.bench"), (8, "pyllm.convert.__main__"),
]
NOT_PART_OF_THE_PACKAGE = {"pyllm._build"}  # the cffi build script, run by setup.py only
COMPILED = {"pyllm._core"}  # the C core, built from csrc/ (no Python source)


def module_files(root: str = PACKAGE_DIR) -> dict[str, str]:
    """Dotted module name -> file, for every .py file under the package directory."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(root))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(folder, f)
    return out


def imported_modules(name: str, source: str, modules: set[str]) -> set[str]:
    """The package modules that `source` (module `name`) imports, wherever the import statement is."""
    package = name if name in modules and _is_package(name, modules) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from x import y` imports the module x.y when y is one, else the attribute y of x
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import pyllm.formats.gguf.X` -> the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def layer_of(module: str) -> int:
    """The layer of a module: that of its longest matching prefix in LAYERS."""
    best = max((p for _, p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")
    return max(layer for layer, p in LAYERS if p == best)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, for the whole package."""
    files = module_files()
    names = (set(files) | COMPILED) - NOT_PART_OF_THE_PACKAGE
    graph: dict[str, set[str]] = {name: set() for name in COMPILED}
    for name in sorted(names - COMPILED):
        with open(files[name], encoding="utf-8") as f:
            graph[name] = imported_modules(name, f.read(), names) - NOT_PART_OF_THE_PACKAGE
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer i) imports b (layer j > i)' for every import that points up."""
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a in sorted(graph) for b in sorted(graph[a]) if layer_of(b) > layer_of(a)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_points_up():
    bad = upward_imports(import_graph())
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# The checker itself, on made-up modules: it must see what it is there to catch.

@pytest.mark.parametrize("source", [
    "from ..model import Model",
    "def f():\n    from .. import model",
    "import pyllm.model",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..model import Model",
])
def test_checker_sees_upward_imports(source):
    modules = {"pyllm", "pyllm.model", "pyllm.formats", "pyllm.formats.gguf"}
    name = "pyllm.formats.gguf"
    graph = {name: imported_modules(name, source, modules)}
    assert graph[name] == {"pyllm.model"}
    assert upward_imports(graph) == [f"{name} (layer 2) imports pyllm.model (layer 7)"]


def test_checker_sees_cycles():
    graph = {"pyllm.a": {"pyllm.b"}, "pyllm.b": {"pyllm.c"}, "pyllm.c": {"pyllm.a"}, "pyllm.d": {"pyllm.a"}}
    assert cycles(graph) == [["pyllm.a", "pyllm.b", "pyllm.c"]]

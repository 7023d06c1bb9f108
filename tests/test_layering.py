"""The package's imports point one way: every module's imports (module-level, inside functions and
under TYPE_CHECKING alike) are read with `ast`, and the test fails on an import of a higher layer
or on any import cycle, naming the modules.

    entry points -> model -> session/generation/engine -> core, paged, tokenizer, sampling, structured,
        chat, convert
        -> architectures -> file formats -> quant -> types, errors, native

Modules of one layer may import each other as long as no cycle forms. A type-only import (under
`if TYPE_CHECKING:`) must respect the layers too, but it runs nothing, so it does not make a cycle:
a session makes generations and a generation drives its session, so generation.py names the
Session type that way.
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
    (4, "pyllm.core"), (4, "pyllm.paged"), (4, "pyllm.tokenizer"), (4, "pyllm.sampling"), (4, "pyllm.structured"), (4, "pyllm.chat"), (4, "pyllm.convert"),
    (5, "pyllm.session"), (5, "pyllm.generation"), (5, "pyllm.engine"),
    (6, "pyllm.model"),
    (7, "pyllm"), (7, "pyllm.__main__"), (7, "pyllm.cli"), (7, "pyllm.run"), (7, "pyllm.perplexity"),
    (7, "pyllm.fetch"), (7, "pyllm.bench"), (7, "pyllm.convert.cli"), (7, "pyllm.convert.__main__"),
    (7, "pyllm.server"),
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


def imported_modules(name: str, source: str, modules: set[str], runtime_only: bool = False) -> set[str]:
    """The package modules that `source` (module `name`) imports, wherever the import statement is
    (with runtime_only, leaving out those under `if TYPE_CHECKING:`)."""
    package = name if name in modules and _is_package(name, modules) else name.rpartition(".")[0]
    tree = ast.parse(source)
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                 for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if runtime_only and id(node) in type_only:
            continue
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


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or
                                         isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def layer_of(module: str) -> int:
    """The layer of a module: that of its longest matching prefix in LAYERS."""
    best = max((p for _, p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")
    return max(layer for layer, p in LAYERS if p == best)


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports, for the whole package (with runtime_only, the
    imports that run)."""
    files = module_files()
    names = (set(files) | COMPILED) - NOT_PART_OF_THE_PACKAGE
    graph: dict[str, set[str]] = {name: set() for name in COMPILED}
    for name in sorted(names - COMPILED):
        with open(files[name], encoding="utf-8") as f:
            graph[name] = imported_modules(name, f.read(), names, runtime_only) - NOT_PART_OF_THE_PACKAGE
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
    found = cycles(import_graph(runtime_only=True))
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
    assert upward_imports(graph) == [f"{name} (layer 2) imports pyllm.model (layer 6)"]


def test_type_only_imports_make_no_cycle():
    source = "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    from .session import Session\n"
    modules = {"pyllm", "pyllm.session", "pyllm.generation"}
    assert imported_modules("pyllm.generation", source, modules) == {"pyllm.session"}
    assert imported_modules("pyllm.generation", source, modules, runtime_only=True) == set()


def test_checker_sees_cycles():
    graph = {"pyllm.a": {"pyllm.b"}, "pyllm.b": {"pyllm.c"}, "pyllm.c": {"pyllm.a"}, "pyllm.d": {"pyllm.a"}}
    assert cycles(graph) == [["pyllm.a", "pyllm.b", "pyllm.c"]]

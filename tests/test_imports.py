"""The import graph of deid: no circle, and no module importing a module of a layer above its own.

Every import counts, at module level or inside a function, except those only a type checker
reads (``if TYPE_CHECKING:``). ``from deid import __version__`` is the package's constant, not
a dependency on the API the package exposes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

#: Layers from the bottom up; a module may import its own layer and those below. A name ending
#: in ``.`` covers a package's modules. A new module goes into one of them.
LAYERS: list[set[str]] = [
    {  # foundations: the stage interface, keys and pseudonyms, rules, pixel and text primitives
        "deid.stage", "deid.codes", "deid.shipped", "deid.faults", "deid.keys", "deid.logs", "deid.lifeline",
        "deid.preload",
        "deid.pseudonyms", "deid.staging", "deid.dicomdir", "deid.freetext", "deid.freetext.",
        "deid.header", "deid.header.unknown", "deid.header.iod", "deid.header.profiles",
        "deid.pixels", "deid.pixels.encode", "deid.pixels.render", "deid.pixels.unused_bits",
        "deid.pixels.regions", "deid.pixels.ocr", "deid.pixels.small_text", "deid.pixels.eligibility",
        "deid.pixels.codecs",
    },
    {  # the stages and what they use
        "deid.header.actions", "deid.header.age", "deid.header.engine", "deid.header.stage", "deid.gate",
        "deid.review", "deid.provenance", "deid.pixels.text", "deid.pixels.derive", "deid.pixels.deform",
        "deid.pixels.dppix",
    },
    {"deid.registry"},
    {"deid.config"},
    {"deid.reader", "deid.writer", "deid.audit", "deid.release"},
    {"deid.api"},
    {"deid.process", "deid.executors", "deid.description"},
    {"deid.pipeline", "deid.verify", "deid.checks", "deid.checks.", "deid.terminal"},
    {"deid", "deid.cli", "deid.train", "deid.train."},
]
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((REPO / "deid").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the imports inside ``if TYPE_CHECKING:`` blocks."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(child.lineno for statement in node.body for child in ast.walk(statement)
                         if isinstance(child, ast.Import | ast.ImportFrom))
    return lines


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.split(".")[0] == "deid")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "deid":
                module = node.module or ""
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    if submodule in known:
                        targets.add(submodule)
                    elif not (module == "deid" and alias.name == "__version__"):
                        targets.add(module)
        graph[name] = targets - {name}
    return graph


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if module in layer or any(entry.endswith(".") and module.startswith(entry) for entry in layer):
            return index
    raise AssertionError(f"{module} is in no layer: place it in tests/test_imports.py LAYERS")


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_the_checks_see_the_circles_and_layers_they_guard():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    graph = import_graph()
    assert "deid.header.engine" in graph["deid.header.stage"]
    assert "deid.header.engine" not in graph["deid.header.actions"]  # the walker owns recursion
    assert "deid.config" not in graph["deid.registry"]  # a type checker's import only
    assert "deid.api" in graph["deid.process"]  # deid run goes through the API's pipeline

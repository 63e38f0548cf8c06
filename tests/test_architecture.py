"""The layers point one way: no import circles (lazy imports included), nothing below the CLI imports
it, and serving code imports no training or evaluation tools. Read from the source, so an import inside
a function (which hides a circle at import time) counts too; `if TYPE_CHECKING:` imports count as well."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "amd_model", "callgate", "pipelines", "processors", "simulator", "turn_eval", "twiml")
SERVING = ("server", "twiml", "processors", "pipelines", "callgate.edge", "callgate.store", "amd_model")
TOOLS = ("amd_model.tools", "turn_eval", "callgate.commands", "callgate.cli")


def _modules() -> dict[str, Path]:
    mods = {"server": REPO / "server.py"}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _known(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {d for a in node.names if (d := _known(a.name, mods))}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    if d := _known(f"{base}.{a.name}", mods):
                        deps.add(d)
        graph[mod] = deps - {mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_lazy_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(graph):
    assert "simulator.script" in graph["simulator.phone"]  # a module-level import
    assert "callgate.synth" in graph["simulator.script"]  # imported inside functions only


def test_no_module_imports_itself_back(graph):
    assert cycles(graph) == []


def test_nothing_below_the_cli_imports_it(graph):
    bad = [(m, d) for m, deps in graph.items() if not _under(m, ("callgate.commands", "callgate.cli"))
           for d in deps if _under(d, ("callgate.commands", "callgate.cli"))]
    assert bad == []


def test_serving_code_imports_no_training_or_evaluation_tools(graph):
    bad = [(m, d) for m, deps in graph.items() if _under(m, SERVING) and not _under(m, TOOLS)
           for d in deps if _under(d, TOOLS)]
    assert bad == []

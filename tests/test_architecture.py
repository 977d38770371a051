"""The package's shape, checked from its source: no import cycle, layers import downwards only, short functions.

Layers: the library (everything else) < the pipeline (``negsynth_hf.pipeline``: one function per step) < the CLI
(``cli``, ``recipe_config``, ``demo``: argv and YAML). Imports under ``if TYPE_CHECKING:`` are not counted: they
never run, so they cannot make an import cycle (the diagnostics renderers name the report type that way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "negsynth_hf"
CLI_LAYER = {"negsynth_hf.cli", "negsynth_hf.recipe_config", "negsynth_hf.demo"}
PIPELINE = "negsynth_hf.pipeline"


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those inside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer(name: str) -> int:
    if name in CLI_LAYER:
        return 2
    if name == PIPELINE or name.startswith(PIPELINE + "."):
        return 1
    return 0


def test_the_checker_sees_imports_and_cycles():
    graph = import_graph()
    assert "negsynth_hf.stages.assemble" in graph["negsynth_hf.build"]
    assert "negsynth_hf.pipeline.build" in graph["negsynth_hf.pipeline"]  # via `from negsynth_hf.pipeline.build import`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("low", [0, 1])
def test_layers_import_downwards_only(low):
    bad = {
        name: sorted(dep for dep in deps if layer(dep) > layer(name))
        for name, deps in import_graph().items()
        if layer(name) == low
    }
    assert {k: v for k, v in bad.items() if v} == {}


MAX_FUNCTION_LINES = 80
# (module path relative to negsynth_hf/, function name) -> why it may be longer for now
LONG_FUNCTIONS_ALLOWED: dict[tuple[str, str], str] = {}


def function_lengths(source: str) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function and method: its lines from ``def`` to its end, docstring excluded.

    Docstrings are not counted: a function explained at length is not harder to read for it.
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        lines = node.end_lineno - node.lineno + 1
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            lines -= first.end_lineno - first.lineno + 1
        out.append((node.name, lines))
    return out


def test_function_length_counts_code_not_docstrings():
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    a = 1\n    return a\n'
    assert function_lengths(source) == [("f", 3)]  # def, a = 1, return


def test_no_function_is_longer_than_the_limit():
    """A function should fit on one screen; a longer one is split into named steps (or allow-listed, with why)."""
    too_long = {
        (path.relative_to(PACKAGE).as_posix(), name): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, lines in function_lengths(path.read_text(encoding="utf-8"))
        if lines > MAX_FUNCTION_LINES
    }
    assert {key: lines for key, lines in too_long.items() if key not in LONG_FUNCTIONS_ALLOWED} == {}

"""Module structure of runtime/ and server/: each module imports on its own, and no two import each other.

The graph is read from the source (AST), function-level imports included: a cycle hidden inside a
function still ties two modules together. Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"runtime": "colbert_onnx", "server": "colbert_onnx.server"}
# Modules that need an optional extra: (distribution module, why).
EXTRAS = {
    "colbert_onnx.arrow": "pyarrow",
    "colbert_onnx.ray": "ray",
    "colbert_onnx.server.app": "fastapi",
    "colbert_onnx.server.compat": "fastapi",
    "colbert_onnx.server.main": "uvicorn",
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of runtime/ and server/ (packages as their __init__)."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(module: str, path: Path) -> set[str]:
    """Modules of this repo that `module` imports anywhere in its source (relative or absolute)."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import arrow`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in names if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    return {module: _imported(module, path) for module, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    assert "colbert_onnx.server.options" in graph["colbert_onnx.cli"]  # imported inside build_parser
    assert "colbert_onnx.hub" in graph["colbert_onnx.encoder"]  # imported inside from_pretrained


def test_find_cycle_finds_a_cycle_hidden_in_a_function() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_runtime_and_server_have_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_vectors_is_a_leaf() -> None:
    assert import_graph()["colbert_onnx.vectors"] <= {"colbert_onnx.errors"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_on_its_own_in_a_fresh_interpreter(module: str) -> None:
    extra = EXTRAS.get(module)
    if extra and importlib.util.find_spec(extra) is None:
        pytest.skip(f"{module} needs {extra}, which this environment lacks")
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_missing_extra_is_an_import_error_naming_the_extra_to_install() -> None:
    from colbert_onnx.extras import import_extra

    with pytest.raises(ImportError, match=r"the demo needs the ray extra: pip install 'colbert-onnx\[ray\]'"):
        import_extra("colbert_onnx_no_such_package", "ray", "the demo")
    assert import_extra("numpy", "base", "anything").__name__ == "numpy"

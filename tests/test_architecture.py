"""The packages' imports point one way: no module of kzjobs/ or bench/ imports itself back.

Read with ast, not by importing, so the walk costs nothing and sees imports that run only
inside functions (a deferred import still makes a loop a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kzjobs", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def _type_checking_block(node: ast.AST) -> bool:
    # `if TYPE_CHECKING:` imports never run: they exist for annotations only, so they
    # cannot make an import loop at run time and are the usual way to name a type both ways.
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ours that `name` is, or lives in (an attribute of a module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = name.split(".") if is_pkg else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, base] if base else package)
                # `from pkg import mod` names a submodule, `from mod import func` a module:
                # each name resolves to the deepest module of ours it is or lives in.
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                # A package's __init__ importing its own submodules is not a loop.
                if resolved and resolved != name and not resolved.startswith(name + "."):
                    graph.add_edge(name, resolved)
    return graph


def test_the_walk_sees_our_modules_and_their_imports() -> None:
    graph = import_graph()
    assert "kzjobs.launch" in graph and "bench.pipeline" in graph
    # A known one-way edge, so the walk cannot pass by seeing nothing.
    assert graph.number_of_edges() > 50


def test_no_import_loops() -> None:
    cycles = sorted(" -> ".join([*c, c[0]]) for c in nx.simple_cycles(import_graph()))
    if cycles:
        pytest.fail("import loops:\n" + "\n".join(cycles[:50]) + f"\n({len(cycles)} in all)")

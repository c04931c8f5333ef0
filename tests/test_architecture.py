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


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {
        _module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
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


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> nx.DiGraph:
    """Module -> each module of ours it imports, anywhere in its code."""
    modules = _modules(root, packages)
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
                if resolved and resolved != name:
                    graph.add_edge(name, resolved)
    return graph


def loops(graph: nx.DiGraph) -> list[str]:
    """Each loop once, as a chain from its first module by name back to it."""
    named = []
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        named.append(" -> ".join([*cycle, cycle[0]]))
    return sorted(named)


def test_the_walk_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # at module level; inside a function; from a module, its names
    assert graph.has_edge("kzjobs.orchestrate.operators.local", "kzjobs.orchestrate.runner")
    assert graph.has_edge("kzjobs.orchestrate.launch", "kzjobs.orchestrate.operators.local")
    assert graph.has_edge("kzjobs.release.jobs", "kzjobs.release.registry")
    assert graph.has_edge("kzjobs.synth.job", "kzjobs.synth")  # a package's own name
    # Annotations only: kzjobs.classify.quantize names Bundle under TYPE_CHECKING.
    assert not graph.has_edge("kzjobs.classify.quantize", "kzjobs.release.bundle")


def test_a_loop_is_found_and_named(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("from pkg.a import thing\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    (pkg / "e.py").write_text("import pkg.d\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert loops(graph) == ["pkg.a -> pkg.sub.b -> pkg.c -> pkg.a"]


def test_no_import_loops() -> None:
    if found := loops(import_graph()):
        pytest.fail("import loops:\n" + "\n".join(found[:50]) + f"\n({len(found)} in all)")


def _layout_names() -> set[str]:
    """The folder and module names the README's Layout section draws under ``kzjobs/``."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    names: set[str] = set()
    inside = False
    for line in block.splitlines():
        if not line.startswith(" "):
            inside = line.startswith("kzjobs/")
        elif inside and not line.startswith("   "):  # an entry, not a wrapped description
            names |= set(line.strip().split("  ", 1)[0].split(", "))
    return names


def test_the_readme_layout_matches_the_package_tree() -> None:
    drawn = _layout_names()
    packages = {f"{p.parent.name}/" for p in (ROOT / "kzjobs").glob("*/__init__.py")}
    modules = {p.name for p in (ROOT / "kzjobs").glob("*.py")} - {"__init__.py"}
    assert packages <= drawn, f"packages missing from README's Layout: {packages - drawn}"
    assert modules <= drawn, f"modules missing from README's Layout: {modules - drawn}"
    absent = drawn - packages - modules
    assert not absent, f"drawn in README's Layout but not in kzjobs/: {absent}"


def test_every_package_says_in_its_docstring_what_layer_it_is() -> None:
    for init in sorted((ROOT / "kzjobs").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and doc.strip(), f"{init.relative_to(ROOT)} has no docstring"

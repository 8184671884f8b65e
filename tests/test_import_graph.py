"""cp_manage's modules import each other without cycles (pure logic: reads the source with ``ast``).

Only imports that run when a module is first imported count: those at module level and in class
bodies, including ``try`` / ``if`` blocks. Imports inside functions run later (when the function
is called) and ``if TYPE_CHECKING:`` imports never run, so neither makes a cycle. A module's
parent packages are not edges (Python initialises them first whatever the module imports), but
``from cp_manage import name`` asks the package's ``__init__`` for a name, and so is one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import cp_manage

PACKAGE_DIR = Path(cp_manage.__file__).parent


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module below ``package_dir`` by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(body: Iterable[ast.stmt], *, lazy: bool = False,
                          ) -> Iterable[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported (with ``lazy``,
    also those that run when one of its functions is called)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from _import_time_imports(node.body, lazy=lazy)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_time_imports(node.orelse, lazy=lazy)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    # an except handler or a match case holds statements in its own body
                    for child in children:
                        if isinstance(child, ast.stmt):
                            yield from _import_time_imports([child], lazy=lazy)
                        else:
                            yield from _import_time_imports(getattr(child, "body", []),
                                                            lazy=lazy)


def imports_of(name: str, path: Path, modules: dict[str, Path], *, lazy: bool = False,
               ) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports at import time (with ``lazy``,
    also inside functions)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _import_time_imports(tree.body, lazy=lazy):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = name.split(".") if is_package else name.split(".")[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(package_dir: Path, *, lazy: bool = False) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports at import time (with ``lazy``, also
    inside functions)."""
    modules = module_files(package_dir)
    return {name: imports_of(name, path, modules, lazy=lazy) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules, as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough to recurse
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_through(min(group), group, graph) for group in groups]


def _cycle_through(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    reached_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(reached_from[path[-1]])
                    return [*reversed(path), start]
                if target not in reached_from:
                    reached_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in no cycle of {sorted(group)}")


def test_cp_manage_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(PACKAGE_DIR))
    assert not cycles, "import cycles in cp_manage:\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_storage_and_config_depend_one_way_even_lazily() -> None:
    """The pairs that once imported each other (one side inside a function) now depend one
    way only: storage opens S3 lazily and S3 needs nothing of storage (the object layout is in
    backends/objects.py); config delegates to credentials lazily and credentials needs config
    only for its type hints."""
    graph = import_graph(PACKAGE_DIR, lazy=True)
    assert "cp_manage.backends.s3" in graph["cp_manage.backends.storage"]
    assert "cp_manage.backends.storage" not in graph["cp_manage.backends.s3"]
    assert "cp_manage.credentials" in graph["cp_manage.config"]
    assert "cp_manage.config" not in graph["cp_manage.credentials"]


def test_the_graph_sees_the_known_edges() -> None:
    """A guard against a detector that finds nothing because it reads nothing."""
    graph = import_graph(PACKAGE_DIR)
    assert "cp_manage.errors" in graph["cp_manage"]
    assert "cp_manage.backends.objects" in graph["cp_manage.backends.s3"]
    assert "cp_manage.backends.s3" not in graph["cp_manage.backends.storage"]  # only lazily


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_module_level_cycle_is_named(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import A\n",
        "pkg/a.py": "from pkg import b\nA = 1\n",
        "pkg/b.py": "try:\n    from .a import A\nexcept ImportError:\n    pass\n",
        "pkg/c.py": "from pkg.b import x\n",
    })
    assert find_cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_child_asking_its_package_for_a_name_is_a_cycle(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "pkg/__init__.py": "__version__ = '1'\nfrom pkg.sub.mod import M\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "from .. import __version__\nclass M:\n    from pkg import other\n",
        "pkg/other.py": "",
    })
    graph = import_graph(package)
    assert graph["pkg.sub.mod"] == {"pkg", "pkg.other"}
    assert find_cycles(graph) == [["pkg", "pkg.sub.mod", "pkg"]]


def test_lazy_and_type_checking_imports_make_no_cycle(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import B\n",
        "pkg/b.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.a import A\nelse:\n    import os\n"
            "def f():\n    from pkg import a\n"
            "class B:\n    def g(self):\n        import pkg.a\n"),
    })
    graph = import_graph(package)
    assert graph["pkg.b"] == set()
    assert find_cycles(graph) == []
    lazy_graph = import_graph(package, lazy=True)
    assert lazy_graph["pkg.b"] == {"pkg.a"}
    assert find_cycles(lazy_graph) == [["pkg.a", "pkg.b", "pkg.a"]]

"""The shape of the house (issue 15): no import cycle among clibd_toolkit modules, lazy imports inside functions
included, and the arrows from the command line into the library only (the library never imports
``clibd_toolkit.cli``). Imports are read with ``ast`` from the source, so a cycle that only bites at run time (or
in a certain import order) still fails here."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clibd_toolkit"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The clibd_toolkit modules ``name`` imports anywhere in its source (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module: that module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle_and_a_lazy_one():
    """The check itself can fail: a two-module cycle and a three-module cycle through a lazy import are found,
    a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_are_read_from_function_bodies_and_relative_forms(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.sub": pkg / "sub" / "__init__.py",
               "pkg.sub.b": pkg / "sub" / "b.py"}
    assert _imports("pkg.a", modules["pkg.a"], modules) == {"pkg.sub.b"}
    assert _imports("pkg.sub", modules["pkg.sub"], modules) == {"pkg.a"}
    assert _imports("pkg.sub.b", modules["pkg.sub.b"], modules) == {"pkg.a"}


def test_no_import_cycle_among_clibd_toolkit_modules():
    graph = _graph()
    assert len(graph) > 40  # the whole package was read
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", sorted(n for n in _modules() if not n.startswith("clibd_toolkit.cli")))
def test_the_library_never_imports_the_command_line(name):
    graph = _graph()
    assert not {m for m in graph[name] if m == "clibd_toolkit.cli" or m.startswith("clibd_toolkit.cli.")}, (
        f"{name} imports the command line; move the argparse code into clibd_toolkit/cli/")


def test_argparse_lives_in_the_command_line_only():
    """Argument parsing is the CLI's job: no library module imports argparse."""
    offenders = [name for name, path in _modules().items() if not name.startswith("clibd_toolkit.cli")
                 and any(isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names)
                         for n in ast.walk(ast.parse(path.read_text())))]
    assert offenders == []

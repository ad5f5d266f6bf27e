"""Architectural fitness: the imports of every module point the way DESIGN.md says.

Read from the source with `ast` (every `import`, at module level or inside a function: a lazy
import is still a dependency). The rules:

- nothing below the command line imports it: no module of lisp, mesh, node, controller_api,
  netlab or common imports `lispmesh`;
- each layer imports only the layers below it (LAYERS), `common` being the bottom one;
- no import cycle between modules except `lisp.address` <-> `lisp.lcaf`;
- no module imports another module's private (underscore) names, and inside mesh/ no object
  reaches into another object's private attributes (only `self._x` and `cls._x`).

Where the code does not follow a rule yet, the offenders are listed exactly (KNOWN_*): a new
offender fails, and so does a fixed one that is still listed (delete it from the list then).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = "lispmesh"
BELOW_CLI = ("common", "certs", "lisp", "mesh", "node", "controller_api", "netlab")

# Which of our packages each package may import (besides itself).
LAYERS = {
    "common": set(),
    "certs": {"common"},
    "lisp": {"common"},
    "mesh": {"common", "certs", "lisp"},
    "controller_api": {"common", "certs", "lisp"},
    "node": {"common", "certs", "lisp", "mesh", "controller_api"},
    "netlab": {"common"},
    CLI: {"common", "certs", "lisp", "mesh", "controller_api", "node", "netlab"},
}
ALLOWED_CYCLES = [{"lisp.address", "lisp.lcaf"}]

# None left (the identity split moved certificates to certs/, the map-server service to
# lisp.map_server.service, the underlay socket and the timers to common/): keep it that way.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: list[set[str]] = []
# `from <our module> import _private`: a module's private names are its own.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()
# Underscore names that are public API of the standard library (namedtuple's `_make`).
PUBLIC_UNDERSCORE = {"_make", "_replace", "_asdict", "_fields"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            if "gen" not in path.relative_to(ROOT).parts:  # generated protobuf stubs
                found[_name(path)] = path
    return found


def _module(dotted: str) -> str | None:
    """The module of ours a dotted name is in (`lisp.address.Address` -> `lisp.address`)."""
    known = modules()
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _imported(name: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports, relative imports made absolute."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # `from lisp import address` imports the module lisp.address, not just lisp.
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the modules of ours it imports."""
    out = {}
    for name, path in modules().items():
        deps = {_module(d) for d in _imported(name, path) if d.split(".")[0] in LAYERS}
        out[name] = frozenset(d for d in deps if d is not None and d != name)
    return out


def _package(module: str) -> str:
    return module.split(".")[0]


def cycles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_scan_sees_the_code() -> None:
    """Guards the checker itself: it finds known imports, so an empty answer means something."""
    edges = graph()
    assert any(_package(dep) == "lisp" for dep in edges["mesh.xtr"])
    assert "common.errors" in edges["netlab.errors"]
    assert {"lispmesh.commands.ops", "lispmesh.errors"} <= edges["lispmesh.commands.node"]
    assert {"lisp.address", "lisp.lcaf"} in cycles()


@pytest.mark.parametrize("package", BELOW_CLI)
def test_nothing_below_the_command_line_imports_it(package: str) -> None:
    offenders = sorted(
        f"{module} imports {dep}"
        for module, deps in graph().items()
        if _package(module) == package
        for dep in deps
        if _package(dep) == CLI
    )
    assert offenders == [], "the CLI package is the top layer: " + "; ".join(offenders)


def test_lisp_imports_nothing_of_ours_but_common() -> None:
    offenders = sorted(
        f"{module} imports {dep}"
        for module, deps in graph().items()
        if _package(module) == "lisp"
        for dep in deps
        if _package(dep) not in ("lisp", "common")
    )
    assert offenders == []


def test_no_upward_import_but_the_known_ones() -> None:
    upward = {
        (module, dep)
        for module, deps in graph().items()
        for dep in deps
        if _package(dep) != _package(module) and _package(dep) not in LAYERS[_package(module)]
    }
    new = sorted(upward - KNOWN_UPWARD)
    fixed = sorted(KNOWN_UPWARD - upward)
    assert not new, f"upward imports (see LAYERS): {new}"
    assert not fixed, f"no longer imported, delete from KNOWN_UPWARD: {fixed}"


def test_no_import_cycle_but_the_known_ones() -> None:
    found = cycles()
    new = [sorted(c) for c in found if c not in ALLOWED_CYCLES + KNOWN_CYCLES]
    fixed = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not new, f"import cycles: {new}"
    assert not fixed, f"cycle gone or changed, update KNOWN_CYCLES: {fixed}"


def test_no_module_imports_another_modules_private_names() -> None:
    found = set()
    for name, path in modules().items():
        for dotted in _imported(name, path):
            module, _, leaf = dotted.rpartition(".")
            private = leaf.startswith("_") and not leaf.startswith("__")
            ours = dotted.split(".")[0] in LAYERS and dotted not in modules()
            if private and ours and _module(module) != name:
                found.add((name, dotted))
    new = sorted(found - KNOWN_PRIVATE_IMPORTS)
    fixed = sorted(KNOWN_PRIVATE_IMPORTS - found)
    assert not new, f"private names imported from another module: {new}"
    assert not fixed, f"no longer imported, delete from KNOWN_PRIVATE_IMPORTS: {fixed}"


def _foreign_private_attributes(source: str, label: str) -> Iterator[str]:
    """`obj._name` where obj is not `self`/`cls` or a class defined in the same file."""
    tree = ast.parse(source, label)
    own = {"self", "cls"} | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in PUBLIC_UNDERSCORE:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in own:
            continue
        yield f"{label}:{node.lineno} {ast.unparse(node)}"


def test_mesh_objects_use_only_each_others_public_names() -> None:
    offenders = [
        hit
        for name, path in sorted(modules().items())
        if _package(name) == "mesh"
        for hit in _foreign_private_attributes(path.read_text(), name)
    ]
    assert offenders == [], "private attributes used from outside their object: " + "; ".join(
        offenders
    )


def test_the_private_name_check_sees_an_offender() -> None:
    """Guards the checker: a reach into another object's private helper is found."""
    bad = "class A:\n    def f(self, xtr):\n        return self._a, A._b, xtr._local_for(4)\n"
    assert list(_foreign_private_attributes(bad, "bad")) == ["bad:3 xtr._local_for"]

"""Architectural fitness: the imports of every module point the way DESIGN.md says.

Read from the source with `ast` (every `import`, at module level or inside a function: a lazy
import is still a dependency). The rules:

- nothing below the command line imports it: no module of lisp, mesh, node, controller_api,
  netlab or common imports `lispmesh`;
- each layer imports only the layers below it (LAYERS), `common` being the bottom one;
- no import cycle between modules except `lisp.address` <-> `lisp.lcaf`.

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
BELOW_CLI = ("common", "lisp", "mesh", "node", "controller_api", "netlab")

# Which of our packages each package may import (besides itself).
LAYERS = {
    "common": set(),
    "lisp": {"common"},
    "mesh": {"common", "lisp"},
    "controller_api": {"common", "lisp"},
    "node": {"common", "lisp", "mesh", "controller_api"},
    "netlab": {"common"},
    CLI: {"common", "lisp", "mesh", "controller_api", "node", "netlab"},
}
ALLOWED_CYCLES = [{"lisp.address", "lisp.lcaf"}]

# Still true today; the identity split (issue 11 item 3) and the mesh restructure (item 1) remove
# them: when your change does, delete the lines here.
KNOWN_UPWARD = {
    ("controller_api.embedded_ms", "mesh.map_server"),
    ("controller_api.embedded_ms", "mesh.node"),
    ("controller_api.enrollment", "mesh.identity"),
    ("controller_api.offline", "mesh.identity"),
    ("controller_api.pki", "mesh.identity"),
    ("controller_api.server", "mesh.identity"),
    ("controller_api.settings", "mesh.config"),
}
KNOWN_CYCLES = [
    {"mesh.etr_answer", "mesh.itr_resolve", "mesh.peer_stats", "mesh.registrar",
     "mesh.revocation", "mesh.rloc_probing", "mesh.warm_start", "mesh.xtr", "mesh.xtr_status"},
]  # fmt: skip


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

"""The gateway's rooms and the arrows between them (docs/architecture.md, "The gateway in rooms").

Read from the source with ``ast``: every import counts, at module level, inside a function
(a delayed import) and under ``TYPE_CHECKING``, since each is an arrow a reader must follow
and a circle hidden by a delayed import is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import bulk_importer
import search_gateway

PACKAGE = Path(search_gateway.__file__).parent
IMPORTER = Path(bulk_importer.__file__).parent
ROOMS = ("http", "clients", "fetch", "search", "gallery", "collections", "feedback")
# The clients, the channels they run on, and the watch of the embed channel's state: the
# only modules that speak gRPC.
EDGE = {"clients/backends.py", "clients/channels.py", "clients/weights_watch.py"}
# Who may not import whom. http/ sits on top (it may import every room); the search and
# the collections never meet (search/gallery_source.py defines the Protocols that wiring.py
# and app.py fill with collections/ code); clients/, fetch/ and gallery/ are below both.
# feedback/ (stored marks) is beside collections/: it imports gallery/ only.
FORBIDDEN = {
    "search": {"collections", "http", "feedback"},
    "collections": {"search", "http", "feedback"},
    "clients": {"search", "collections", "http", "feedback"},
    "fetch": {"search", "collections", "http", "feedback"},
    "gallery": {"search", "collections", "http", "feedback"},
    # The stored feedback marks (issue 22) sit on the gallery alone; the search reads them
    # through search/feedback_boost.py's Protocol, filled by wiring.py.
    "feedback": {"search", "collections", "http", "clients", "fetch"},
}
# The top-level modules that assemble the rooms: no room imports them.
ASSEMBLY = {"search_gateway.app", "search_gateway.wiring", "search_gateway.server", "search_gateway.__main__"}
# Starlette (and its form parser) stays in http/; of the top-level modules only these use it:
# the application itself, the errors' JSON replies and the tenant read from a request's scope.
WEB_FRAMEWORK = ("starlette", "python_multipart")
WEB_TOP_LEVEL = {"app.py", "errors.py", "tenants.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from search_gateway.http import routes` imports the module search_gateway.http.routes.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` (a package is its __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in _imports(path):
            # `from pkg.mod import Class` names pkg.mod.Class: the module is the longest known prefix.
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _room(module: str) -> str | None:
    """The room of ``search_gateway.<room>.…``; None for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else None


def _circles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Each import circle once, found by a depth-first search: an arrow back to a module
    still on the search's path closes one."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> Iterator[list[str]]:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph[module]):
            if target in on_path:
                yield [*path[path.index(target):], target]
            elif target not in done:
                yield from visit(target)
        on_path.discard(module)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            yield from visit(module)


def test_only_the_backend_clients_import_generated_code_or_grpc() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in EDGE:
            continue
        wire = {name for name in _imports(path)
                if name.split(".")[0] in ("tattoo_search", "grpc", "grpc_health") or name == "service_common.tensors"}
        if wire:
            offenders[path.relative_to(PACKAGE).as_posix()] = sorted(wire)
    assert offenders == {}


def test_each_room_imports_only_the_rooms_below_it() -> None:
    offenders = sorted(f"{module} -> {target}" for module, targets in _graph(PACKAGE).items() for target in targets
                       if _room(target) in FORBIDDEN.get(_room(module) or "", set()))
    assert offenders == []


def test_no_room_imports_the_modules_that_assemble_the_gateway() -> None:
    offenders = sorted(f"{module} -> {target}" for module, targets in _graph(PACKAGE).items() for target in targets
                       if _room(module) is not None and target in ASSEMBLY)
    assert offenders == []


def test_only_http_and_the_named_top_level_modules_import_starlette() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith("http/") or where in WEB_TOP_LEVEL:
            continue
        web = sorted(name for name in _imports(path) if name.split(".")[0] in WEB_FRAMEWORK)
        if web:
            offenders[where] = web
    assert offenders == {}


def test_the_bulk_importer_imports_nothing_of_the_gateway() -> None:
    # An HTTP client of the gateway, shipped and run on its own: the gateway's code is not its API.
    offenders = {path.relative_to(IMPORTER).as_posix(): sorted(n for n in _imports(path) if n.split(".")[0] == "search_gateway")
                 for path in sorted(IMPORTER.rglob("*.py"))}
    assert {where: names for where, names in offenders.items() if names} == {}


def test_no_import_circles_in_the_gateway() -> None:
    assert list(_circles(_graph(PACKAGE))) == []


def test_the_circle_finder_finds_a_circle() -> None:
    # The check above must be able to fail: a two-module circle behind a third module, and a self-free chain.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": {"a"}}
    assert list(_circles(graph)) == [["b", "c", "b"]]

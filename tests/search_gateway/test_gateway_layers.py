"""Protobuf and gRPC stop at the backend clients: the rest of the gateway sees its own types."""

from __future__ import annotations

import ast
from pathlib import Path

import search_gateway

PACKAGE = Path(search_gateway.__file__).parent
# The clients, the channels they run on, and the watch on a channel's state (which
# tells the embedding cache of an embed server restart): the only modules that speak gRPC.
EDGE = {"backends.py", "channels.py", "weights_watch.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


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

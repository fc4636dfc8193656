"""The gateway served exactly as ``python -m search_gateway`` serves it (server.uvicorn_config),
on a loopback port of the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from search_gateway.app import create_app
from search_gateway.config import GatewaySettings
from search_gateway.server import GuardedH11Protocol, uvicorn_config
from tests.search_gateway.gateway_support import RunningGateway


def protocol_of(gateway: RunningGateway) -> type[GuardedH11Protocol]:
    """The server's protocol class: its ``counts`` are the open connections per address."""
    cls = gateway.server.config.http_protocol_class
    assert issubclass(cls, GuardedH11Protocol), cls
    return cls


@contextlib.asynccontextmanager
async def serve_gateway(settings: GatewaySettings, **app_options: Any) -> AsyncIterator[RunningGateway]:
    app = create_app(settings, **app_options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not (server.started or task.done()):
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield RunningGateway(port, app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()

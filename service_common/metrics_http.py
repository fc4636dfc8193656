"""The Prometheus endpoint of a gRPC service: its own registry served over plain HTTP on
a port of its own (`<PREFIX>METRICS_PORT`), beside the gRPC port.

Each server has its own `CollectorRegistry`, never the process-wide one, so several
servers in one process (tests) keep their numbers apart. prometheus_client's HTTP
server answers on its own threads: a scrape works even while the event loop is busy,
and a collector that takes a while (nvidia-smi) never stalls the service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsExport:
    """What a service exports: its registry, the prefix of the metric names it shares
    with other services (`embed` gives `embed_requests_total`), and the port (0 picks a
    free one; a service whose setting is 0 passes no MetricsExport at all)."""

    registry: CollectorRegistry
    namespace: str
    port: int


class MetricsEndpoint:
    """A listening metrics server; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    @classmethod
    async def start(cls, registry: CollectorRegistry, host: str, port: int, env_prefix: str) -> MetricsEndpoint:
        """Listen on `host:port`, or raise OSError naming the settings to change."""
        address = host.strip("[]")  # gRPC's "[::]" is the socket library's "::"
        try:
            # On a thread: binding looks the host's name up (HTTPServer.server_bind), which
            # can wait on DNS.
            server, thread = await asyncio.to_thread(start_http_server, port, address, registry)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port} ({env_prefix}HOST, {env_prefix}METRICS_PORT): {exc}"
            ) from None
        return cls(server, thread)

    async def close(self) -> None:
        # shutdown() waits for the serving loop to notice (up to half a second): not on the loop.
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

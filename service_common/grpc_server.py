"""One way for both gRPC services to build, run and stop their server.

`create_server()` binds (port 0 picks a free port), registers the application services,
the standard health service (grpc.health.v1) and server reflection (so `grpcurl` and
`grpc_health_probe` work with no extra files), installs the interceptors and starts
listening. `GrpcServer.stop(grace)` stops gracefully: health turns NOT_SERVING for every
name at once, new calls are refused UNAVAILABLE, the calls in flight get up to `grace`
seconds to finish (grpc_drain.py says why the server keeps answering meanwhile), then
the server closes and the service releases what it holds. `serve()` is the `__main__`
loop around it: run until SIGINT or SIGTERM, then stop.

Interceptors, outermost first: the status counter when metrics are exported
(grpc_call_metrics.py; outermost, so it also counts the refusals of the others), the
in-flight counter (grpc_drain.py), those the service passes (room for authentication),
then request decoding (grpc_requests.py), which must sit next to the handler as it
takes the request bytes over.

Metrics (`metrics=MetricsExport(...)`, metrics_http.py) are served over HTTP on their
own port from the moment the server listens until it has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs 1.53 predates it
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge

from service_common.grpc_call_metrics import CallStatusInterceptor, requests_counter
from service_common.grpc_drain import InFlightCalls
from service_common.grpc_requests import RequestDecodingInterceptor
from service_common.keepalive import KEEPALIVE, Keepalive
from service_common.metrics_http import MetricsEndpoint, MetricsExport

log = logging.getLogger(__name__)

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Service:
    """One application service: its full name (`tattoo_search.v1.EmbedService`), its
    servicer, and the generated function that adds that servicer to a server."""

    name: str
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]


class GrpcServer:
    """A listening server; `stop()` is the one way to end it."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health: health_aio.HealthServicer,
        calls: InFlightCalls,
        on_stop: Callable[[], Awaitable[None]] | None,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self._server = server
        self._health = health
        self._calls = calls
        self._on_stop = on_stop
        self._metrics = metrics
        self._stopping: asyncio.Task[None] | None = None

    @property
    def metrics_port(self) -> int | None:
        """The port Prometheus scrapes; None when metrics are off."""
        return self._metrics.port if self._metrics is not None else None

    async def set_serving(self, name: str, serving: bool) -> None:
        """Report `name` ("" is the whole server) SERVING or NOT_SERVING; ignored once
        stopping, so a late report cannot undo NOT_SERVING."""
        await self._health.set(name, SERVING if serving else NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully, giving calls in flight up to `grace` seconds (None: none).
        Calling it again waits for the first stop."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace or 0.0))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        self._calls.drain()
        await self._health.enter_graceful_shutdown()
        in_flight = self._calls.count
        if await self._calls.wait_idle(grace):
            log.info("stopped: every call in flight finished (%d at the start)", in_flight)
        else:
            log.warning("stopped: grace period of %.1f s over, cancelling %d calls in flight", grace, self._calls.count)
        await self._server.stop(None)  # what remains: cancelled calls, health watches
        if self._on_stop is not None:
            await self._on_stop()
        if self._metrics is not None:  # last: a scrape during the drain still answers
            await self._metrics.close()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def create_server(
    services: Sequence[Service],
    *,
    host: str,
    port: int,
    env_prefix: str,
    serving: bool = True,
    health_names: Iterable[str] = (),
    max_receive_bytes: int | None = None,
    max_send_bytes: int | None = None,
    max_concurrent_rpcs: int | None = None,
    max_connection_age_s: float = 0.0,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    metrics: MetricsExport | None = None,
    keepalive: Keepalive = KEEPALIVE,
) -> tuple[GrpcServer, int]:
    """A started server and the port it listens on.

    Health starts as `serving` for the whole server (""), each service and each of
    `health_names` (a service's finer names, such as one per model). `env_prefix` names
    the host and port variables in a bind error. `credentials` (grpc_security.py) makes
    the port TLS; None leaves it plaintext. `on_stop` runs once the server has
    stopped, to release what the servicers hold. `metrics`: the registry to serve on
    its own port (on `host`), where calls are counted by status too. `max_connection_age_s`
    (0: none) closes each client connection gracefully at that age, so clients re-resolve.
    `keepalive`: the pings the server accepts, the same `Keepalive` the clients ping by
    (keepalive.py; only tests pass another).
    """
    names = [service.name for service in services]
    calls = InFlightCalls(names)
    options: list[tuple[str, Any]] = [
        # grpc enables SO_REUSEPORT by default, which lets a second server start on a busy
        # port and silently take half the traffic; a clear bind error is what an operator needs.
        ("grpc.so_reuseport", 0),
        # Accept the clients' keepalive pings rather than answer them GOAWAY "too_many_pings".
        *keepalive.server_options(),
    ]
    if max_receive_bytes is not None:
        options.append(("grpc.max_receive_message_length", max_receive_bytes))
    if max_send_bytes is not None:
        options.append(("grpc.max_send_message_length", max_send_bytes))
    if max_connection_age_s > 0:
        # A client balancing round robin over `dns:///` resolves the name again only when
        # a connection closes; without an age limit, replicas added by an autoscaler
        # would get no calls until something broke. GOAWAY at this age (with a grace for
        # calls in flight) makes every client reconnect and find the current replicas.
        age_ms = int(max_connection_age_s * 1000)
        options.append(("grpc.max_connection_age_ms", age_ms))
        options.append(("grpc.max_connection_age_grace_ms", max(age_ms // 10, 5000)))
    counting: list[grpc.aio.ServerInterceptor] = []
    if metrics is not None:
        counting.append(CallStatusInterceptor(requests_counter(metrics.namespace, metrics.registry), names))
    server = grpc.aio.server(
        interceptors=[*counting, calls, *interceptors, RequestDecodingInterceptor()],
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    for service in services:
        service.add_to_server(service.servicer, server)

    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *names, *health_names):  # "" is the whole server, as grpc_health_probe asks
        await health.set(name, SERVING if serving else NOT_SERVING)
    reflection.enable_server_reflection((*names, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    endpoint = None
    if metrics is not None:
        in_flight = Gauge(f"{metrics.namespace}_requests_in_flight", "gRPC calls being served now.",
                          registry=metrics.registry)
        in_flight.set_function(lambda: calls.count)
        # Before the gRPC bind: a grpc server that bound its port but never started keeps
        # the port until the process ends, while the metrics server closes cleanly.
        endpoint = await MetricsEndpoint.start(metrics.registry, host, metrics.port, env_prefix)
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc's way of saying the bind failed
        await _close(endpoint)
        raise OSError(f"cannot listen on {address} ({env_prefix}HOST, {env_prefix}PORT): {exc}") from None
    if bound == 0:  # older grpc versions return 0 instead of raising
        await _close(endpoint)
        raise OSError(f"cannot listen on {address} ({env_prefix}HOST, {env_prefix}PORT)")
    try:
        await server.start()
    except BaseException:
        await _close(endpoint)
        raise
    return GrpcServer(server, health, calls, on_stop, endpoint), bound


async def _close(endpoint: MetricsEndpoint | None) -> None:
    if endpoint is not None:
        await endpoint.close()


def stop_requested() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM. Call it before listening: a supervisor may
    signal as soon as it reads the address in the log."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


async def serve(server: GrpcServer, stop: asyncio.Event, grace_s: float) -> None:
    """Serve until `stop` is set, then stop gracefully within `grace_s` seconds."""
    await stop.wait()
    log.info("shutting down: health NOT_SERVING, finishing calls in flight (%.1f s at most)", grace_s)
    await server.stop(grace_s)

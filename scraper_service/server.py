"""Building the gRPC server; running it is ``__main__``'s job."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from scraper_service.cache import Clock, TTLCache
from scraper_service.config import ScraperSettings
from scraper_service.engines import build_engines
from scraper_service.models import Found
from scraper_service.protocol import CacheKey
from scraper_service.retry import RetryPolicy
from scraper_service.search import TieredSearch
from scraper_service.servicer import ScraperServicer
from service_common.grpc_requests import RequestDecodingInterceptor
from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc

SERVICE_NAME: str = scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name

# Searches are cheap for this process (the work is remote) but every one holds sockets
# and worker threads, so the number served at once is bounded.
MAX_CONCURRENT_RPCS = 64


async def create_server(settings: ScraperSettings, *, clock: Clock = time.monotonic) -> tuple[grpc.aio.Server, int]:
    """A bound, not yet started server and its port (useful with ``SCRAPER_PORT=0``).

    ``clock`` drives the cache's expiry; tests pass a fake one instead of sleeping.
    Engine misconfiguration (a missing catalog, ...) raises here, before anything listens.
    """
    engines = build_engines(settings)
    retry = RetryPolicy(settings.retry_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s)
    search = TieredSearch(engines, retry, settings.platform_timeout_s)
    cache: TTLCache[CacheKey, tuple[Found, ...]] = TTLCache(settings.cache_ttl_s, settings.cache_size, clock)

    # grpc enables SO_REUSEPORT by default, which lets a second scraper start on a busy port
    # and silently take half the traffic; a clear bind error is what an operator needs.
    # The interceptor answers undecodable request bytes INVALID_ARGUMENT instead of UNKNOWN.
    server = grpc.aio.server(
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        interceptors=[RequestDecodingInterceptor()],
        options=[("grpc.so_reuseport", 0)],
    )
    servicer = ScraperServicer(settings, search, cache)
    scraper_pb2_grpc.add_ScraperServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]  # generated

    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE_NAME):  # "" is the whole server, as grpc_health_probe asks
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = server.add_insecure_port(settings.address)
    except RuntimeError as exc:  # grpc's way of saying the bind failed
        raise OSError(f"cannot listen on {settings.address} (SCRAPER_HOST, SCRAPER_PORT): {exc}") from None
    if port == 0:  # older grpc versions return 0 instead of raising
        raise OSError(f"cannot listen on {settings.address} (SCRAPER_HOST, SCRAPER_PORT)")
    return server, port

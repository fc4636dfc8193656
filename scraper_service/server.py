"""Building the gRPC server; running it is ``__main__``'s job (service_common/grpc_server.py
has the shape both services share: health, reflection, interceptors, graceful stop)."""

from __future__ import annotations

import time

from scraper_service.cache import Clock, TTLCache
from scraper_service.config import ScraperSettings
from scraper_service.engines import build_engines
from scraper_service.metrics import NAMESPACE as METRICS_NAMESPACE
from scraper_service.metrics import ScraperMetrics
from scraper_service.models import Found
from scraper_service.protocol import CacheKey
from scraper_service.retry import RetryPolicy
from scraper_service.search import TieredSearch
from scraper_service.servicer import ScraperServicer
from service_common.grpc_server import GrpcServer, Service
from service_common.grpc_server import create_server as create_grpc_server
from service_common.metrics_http import MetricsExport
from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc

SERVICE_NAME: str = scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name

# Searches are cheap for this process (the work is remote) but every one holds sockets
# and worker threads, so the number served at once is bounded.
MAX_CONCURRENT_RPCS = 64


async def create_server(settings: ScraperSettings, *, clock: Clock = time.monotonic) -> tuple[GrpcServer, int]:
    """A started server and its port (useful with ``SCRAPER_PORT=0``).

    ``clock`` drives the cache's expiry; tests pass a fake one instead of sleeping.
    Engine misconfiguration (a missing catalog, ...) raises here, before anything listens.
    """
    engines = build_engines(settings)
    retry = RetryPolicy(settings.retry_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s)
    metrics = ScraperMetrics()
    search = TieredSearch(engines, retry, settings.platform_timeout_s, metrics.engine_error)
    cache: TTLCache[CacheKey, tuple[Found, ...]] = TTLCache(settings.cache_ttl_s, settings.cache_size, clock)
    metrics.watch_cache(cache)
    servicer = ScraperServicer(settings, search, cache, metrics)
    return await create_grpc_server(
        [Service(SERVICE_NAME, servicer, scraper_pb2_grpc.add_ScraperServiceServicer_to_server)],
        host=settings.host,
        port=settings.port,
        env_prefix="SCRAPER_",
        max_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        max_connection_age_s=settings.max_connection_age_s,
        metrics=MetricsExport(metrics.registry, METRICS_NAMESPACE, settings.metrics_port)
        if settings.metrics_port
        else None,
        interceptors=settings.security.interceptors(),
        credentials=settings.security.credentials(),  # raises SecurityConfigError naming the file
    )

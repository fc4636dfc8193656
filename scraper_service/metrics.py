"""The scraper's Prometheus metrics, served on SCRAPER_METRICS_PORT.

Searches by outcome, candidates the engines found by platform, engine errors by engine
and reason, and the result cache's hits, misses and evictions. Calls by method and
status (`scraper_requests_total`) and in flight are counted by service_common for every
gRPC service alike.

The cache keeps its own counts (cache.py); they are read when Prometheus scrapes, on the
metrics server's thread (plain reads of integers the event loop keeps).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from scraper_service.cache import TTLCache
from scraper_service.models import Platform
from scraper_service.search import EngineErrorReason

NAMESPACE = "scraper"

# How a search ended: answered from the cache; every source answered; some sources
# failed but the others answered; every source failed (UNAVAILABLE); the request was
# refused (INVALID_ARGUMENT, no engine for its platforms); the client left first; an
# unexpected exception (a bug: the log has it).
Outcome = Literal["cached", "complete", "partial", "failed", "invalid", "cancelled", "error"]


class ScraperMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._searches = Counter(
            "scraper_searches_total",
            "Searches by outcome: cached, complete, partial (some sources failed), failed, invalid, cancelled, error.",
            ("outcome",), registry=r)
        self._candidates = Counter(
            "scraper_candidates_total", "Candidates the engines found, after deduplication, by platform "
            "(answers from the cache not counted).", ("platform",), registry=r)
        self._engine_errors = Counter(
            "scraper_engine_errors_total",
            "Failed engine attempts (each retry counts) by engine and reason: timeout, transient, error, internal.",
            ("engine", "reason"), registry=r)
        ProcessCollector(namespace="", registry=r)

    def searched(self, outcome: Outcome) -> None:
        self._searches.labels(outcome).inc()

    def found(self, platform: Platform) -> None:
        self._candidates.labels(platform.value).inc()

    def engine_error(self, engine: str, reason: EngineErrorReason) -> None:
        self._engine_errors.labels(engine, reason).inc()

    def watch_cache(self, cache: TTLCache) -> None:
        """Read `cache`'s counts at every scrape."""
        self.registry.register(_CacheCollector(cache))


class _CacheCollector(Collector):
    def __init__(self, cache: TTLCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[CounterMetricFamily]:
        # Not len(cache): counting live entries walks cachetools' expiry list, which the
        # event loop may be changing at that moment on its own thread.
        yield CounterMetricFamily("scraper_cache_hits", "Searches answered from the result cache.",
                                  value=self._cache.hits)
        yield CounterMetricFamily("scraper_cache_misses", "Searches not in the result cache (or it is off).",
                                  value=self._cache.misses)
        yield CounterMetricFamily("scraper_cache_evictions", "Live cache entries pushed out by newer ones.",
                                  value=self._cache.evictions)

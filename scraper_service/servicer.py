"""The gRPC edge: validation, the cache, and the one place errors become status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from scraper_service.cache import TTLCache
from scraper_service.config import ScraperSettings
from scraper_service.metrics import Outcome, ScraperMetrics
from scraper_service.models import Found
from scraper_service.protocol import CacheKey, cache_key, candidate_message, spec_from_request
from scraper_service.search import AllSourcesFailedError, NoSourcesError, SearchReport, TieredSearch
from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc

logger = logging.getLogger(__name__)

# Trailing metadata telling the client whether the answer came from the cache.
CACHE_METADATA_KEY = "x-scraper-cache"


class ScraperServicer(scraper_pb2_grpc.ScraperServiceServicer):
    def __init__(
        self,
        settings: ScraperSettings,
        search: TieredSearch,
        cache: TTLCache[CacheKey, tuple[Found, ...]],
        metrics: ScraperMetrics,
    ) -> None:
        self._settings = settings
        self._search = search
        self._cache = cache
        self._metrics = metrics

    async def Search(  # noqa: N802 - the name comes from the proto
        self,
        request: scraper_pb2.SearchRequest,
        context: grpc.aio.ServicerContext[scraper_pb2.SearchRequest, scraper_pb2.Candidate],
    ) -> AsyncIterator[scraper_pb2.Candidate]:
        outcome: Outcome = "error"  # an exception none of the ends below turned into a status
        try:
            try:
                spec = spec_from_request(request, self._settings)
            except ValueError as exc:
                outcome = "invalid"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

            key = cache_key(spec)
            cached = self._cache.get(key)
            if cached is not None:
                logger.info("search %r: %d results from cache (hits=%d)", spec.query, len(cached), self._cache.hits)
                context.set_trailing_metadata(((CACHE_METADATA_KEY, "hit"),))
                for found in cached:
                    yield candidate_message(found, from_cache=True)
                outcome = "cached"
                return

            context.set_trailing_metadata(((CACHE_METADATA_KEY, "miss"),))
            started = time.monotonic()
            report = SearchReport()
            results: list[Found] = []
            try:
                async with contextlib.aclosing(self._search.stream(spec, report)) as stream:
                    async for found in stream:
                        results.append(found)
                        self._metrics.found(found.hit.platform)
                        yield candidate_message(found)
            except NoSourcesError as exc:
                outcome = "invalid"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc}; ask for other platforms")
            except AllSourcesFailedError as exc:
                outcome = "failed"
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"every image source failed, try again later: {exc}",
                )
            outcome = "partial" if report.failures else "complete"
            logger.info(
                "search %r: %d results, tiers %s, %d/%d sources failed, %.2fs",
                spec.query,
                len(results),
                report.tiers,
                len(report.failures),
                report.sources,
                time.monotonic() - started,
            )
            # A result with a failed source is likely to be better a minute later; keeping it
            # for the whole TTL would pin the degraded answer.
            if not report.failures:
                self._cache.put(key, tuple(results))
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the client left or its deadline passed: grpc closed the stream
            raise
        finally:
            self._metrics.searched(outcome)

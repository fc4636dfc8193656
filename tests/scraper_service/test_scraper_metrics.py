"""The scraper's Prometheus metrics (SCRAPER_METRICS_PORT): a real server on port 0 with
the fake web behind ddgs, real searches, the endpoint scraped over HTTP and read with
Prometheus's own parser."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from ddgs.exceptions import DDGSException, RatelimitException

from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import FakeWeb, collect, ddgs_results, wait_until
from tests.support.metrics import Samples, free_port, listening_ports, scrape, value


async def _scrape(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)  # the server shares this event loop


async def test_searches_candidates_engine_errors_cache_and_calls_are_counted(web: FakeWeb, start_scraper) -> None:
    def limited(query: str, n: int) -> list[dict]:
        raise RatelimitException("https://duckduckgo.com/i.js 403 Ratelimit")

    web.on("pinterest.com", lambda q, n: ddgs_results("pinterest.com", 2) if q == "koi fish" else limited(q, n))
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    port = free_port()
    scraper = await start_scraper(metrics_port=port, retry_attempts=3, cache_ttl_s=60)
    assert scraper.server.metrics_port == port

    partial, _ = await collect(scraper.stub, query="rose tattoo")  # Pinterest rate-limited every time
    complete, _ = await collect(scraper.stub, query="koi fish")
    cached, meta = await collect(scraper.stub, query="koi fish")
    assert (len(partial), len(complete), len(cached), meta["x-scraper-cache"]) == (3, 5, 5, "hit")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(scraper.stub, query="   ")
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    samples = await _scrape(port)

    assert value(samples, "scraper_searches_total", outcome="partial") == 1  # a source failed
    assert value(samples, "scraper_searches_total", outcome="complete") == 1
    assert value(samples, "scraper_searches_total", outcome="cached") == 1
    assert value(samples, "scraper_searches_total", outcome="invalid") == 1
    # Found by the engines: 3 + 3 on Reddit, 2 on Pinterest; the cached replay is not a find.
    assert value(samples, "scraper_candidates_total", platform="reddit") == 6
    assert value(samples, "scraper_candidates_total", platform="pinterest") == 2
    assert value(samples, "scraper_engine_errors_total", engine="duckduckgo", reason="transient") == 3  # each try
    assert value(samples, "scraper_cache_hits_total") == 1
    assert value(samples, "scraper_cache_misses_total") == 2
    assert value(samples, "scraper_cache_evictions_total") == 0
    assert value(samples, "scraper_requests_total", method="Search", code="OK") == 3
    assert value(samples, "scraper_requests_total", method="Search", code="INVALID_ARGUMENT") == 1
    assert value(samples, "scraper_requests_in_flight") == 0
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0

    await scraper.server.stop(None)
    assert port not in listening_ports(), "the metrics server stops with the gRPC server"


async def test_every_source_failing_is_counted_as_a_failed_search_and_unavailable(
    web: FakeWeb, start_scraper
) -> None:
    def broken(query: str, n: int) -> list[dict]:
        raise DDGSException("https://duckduckgo.com 500 Server Error")

    web.on("pinterest.com", broken)
    port = free_port()
    scraper = await start_scraper(metrics_port=port)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(scraper.stub, query="rose tattoo", platforms=[scraper_pb2.PLATFORM_PINTEREST])
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    samples = await _scrape(port)

    assert value(samples, "scraper_searches_total", outcome="failed") == 1
    failures = value(samples, "scraper_engine_errors_total", engine="duckduckgo", reason="error")
    assert failures == len(web.calls_for("pinterest.com")) >= 1, "not retried: one error per source asked"
    assert value(samples, "scraper_requests_total", method="Search", code="UNAVAILABLE") == 1


async def test_a_platform_that_does_not_answer_counts_as_a_timeout(web: FakeWeb, start_scraper) -> None:
    stuck = threading.Event()

    def no_answer(query: str, n: int) -> list[dict]:
        stuck.wait(5)  # set when the test is done, so the thread does not outlive it
        return []

    web.on("pinterest.com", no_answer)
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    port = free_port()
    scraper = await start_scraper(metrics_port=port, platform_timeout_s=0.1, retry_attempts=2)
    try:
        results, _ = await collect(scraper.stub, query="rose tattoo")
    finally:
        stuck.set()
    assert len(results) == 3
    samples = await _scrape(port)
    assert value(samples, "scraper_engine_errors_total", engine="duckduckgo", reason="timeout") == 2


async def test_a_client_that_leaves_is_counted_as_cancelled(web: FakeWeb, start_scraper) -> None:
    release = threading.Event()
    web.on("pinterest.com", lambda q, n: ddgs_results("pinterest.com", 1) if release.wait(10) else [])
    web.on("reddit.com", ddgs_results("reddit.com", 1))
    port = free_port()
    scraper = await start_scraper(metrics_port=port, min_results=10)

    call = scraper.stub.Search(scraper_pb2.SearchRequest(query="rose tattoo"), timeout=10)
    await call.read()  # Reddit's answer; Pinterest is still searching
    call.cancel()
    try:
        await wait_until(lambda: bool(_searches_cancelled(port)), timeout_s=30)
    finally:
        release.set()
    samples = await _scrape(port)
    assert value(samples, "scraper_searches_total", outcome="cancelled") == 1
    assert value(samples, "scraper_requests_total", method="Search", code="CANCELLED") == 1


def _searches_cancelled(port: int) -> float:
    return value(scrape(port), "scraper_searches_total", outcome="cancelled") or 0


async def test_with_metrics_port_zero_only_grpc_listens(web: FakeWeb, start_scraper) -> None:
    before = listening_ports()
    scraper = await start_scraper()  # SCRAPER_METRICS_PORT defaults to 0
    assert scraper.server.metrics_port is None
    assert listening_ports() - before == {scraper.port}

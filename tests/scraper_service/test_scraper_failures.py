"""Retries, failing platforms, all sources failing, cancellation and the cache."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from scraper_service.platforms import SITE_DOMAINS
from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import FakeClock, FakeWeb, collect, ddgs_results, read_all, wait_until

RED = scraper_pb2.PLATFORM_REDDIT


async def test_rate_limit_is_retried_with_exponential_backoff(web: FakeWeb, start_scraper) -> None:
    def flaky(query: str, n: int) -> list[dict]:
        if n < 2:
            raise RatelimitException("https://duckduckgo.com/i.js 403 Ratelimit")
        return ddgs_results("pinterest.com", 2)

    web.on("pinterest.com", flaky)
    scraper = await start_scraper(retry_attempts=3, retry_backoff_s=0.1, retry_backoff_max_s=1.0)

    results, _ = await collect(scraper.stub, query="rose tattoo", min_results=1)

    assert len(results) == 2
    calls = web.calls_for("pinterest.com")
    assert len(calls) == 3
    first_wait = calls[1].started - calls[0].finished
    second_wait = calls[2].started - calls[1].finished
    # base * 2**retry plus up to 50 % jitter, and some slack for a busy machine.
    assert 0.1 <= first_wait < 0.15 + 0.4
    assert 0.2 <= second_wait < 0.3 + 0.4


@pytest.mark.parametrize("error", [RatelimitException("Ratelimit"), TimeoutException("timed out")])
async def test_retries_are_bounded_and_one_failing_platform_does_not_fail_the_stream(
    web: FakeWeb, start_scraper, error: Exception
) -> None:
    def always(query: str, n: int) -> list[dict]:
        raise error

    web.on("pinterest.com", always)
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    scraper = await start_scraper(retry_attempts=3)

    results, _ = await collect(scraper.stub, query="rose tattoo")

    assert [c.platform for c in results] == [RED] * 3
    assert len(web.calls_for("pinterest.com")) == 3


@pytest.mark.parametrize("error", [DDGSException("https://duckduckgo.com 500 Server Error"), KeyError("vqd")])
async def test_other_errors_fail_the_platform_without_retry(web: FakeWeb, start_scraper, error: Exception) -> None:
    def broken(query: str, n: int) -> list[dict]:
        raise error

    web.on("pinterest.com", broken)
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="rose tattoo")

    assert len(results) == 3
    assert len(web.calls_for("pinterest.com")) == 1


async def test_a_platform_that_never_answers_times_out(web: FakeWeb, start_scraper) -> None:
    def stuck(query: str, n: int) -> list[dict]:
        time.sleep(0.5)
        return ddgs_results("pinterest.com", 1)

    web.on("pinterest.com", stuck)
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    scraper = await start_scraper(platform_timeout_s=0.15, retry_attempts=2)

    started = time.monotonic()
    results, _ = await collect(scraper.stub, query="rose tattoo")

    assert [c.platform for c in results] == [RED] * 3
    assert len(web.calls_for("pinterest.com")) == 2  # the timeout is retried once, then given up
    assert time.monotonic() - started < 2.0


async def test_all_sources_failing_is_unavailable_with_the_reason(web: FakeWeb, start_scraper) -> None:
    def limited(query: str, n: int) -> list[dict]:
        raise RatelimitException("202 Ratelimit")

    for domain in SITE_DOMAINS.values():
        web.on(domain, limited)
    scraper = await start_scraper(retry_attempts=2)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(scraper.stub, query="rose tattoo")

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "every image source failed" in details
    assert "duckduckgo/pinterest" in details and "duckduckgo/instagram" in details
    assert "Ratelimit" in details
    assert len(web.calls) == 3 * 2


async def test_nothing_found_is_an_empty_stream_not_an_error(web: FakeWeb, start_scraper) -> None:
    scraper = await start_scraper()
    results, _ = await collect(scraper.stub, query="rose tattoo")
    assert results == []


async def test_cancelling_the_call_stops_upstream_work(web: FakeWeb, start_scraper) -> None:
    release = threading.Event()

    def slow_then_limited(query: str, n: int) -> list[dict]:
        release.wait(5)
        raise RatelimitException("Ratelimit")  # a running search would retry this

    web.on("pinterest.com", slow_then_limited)
    web.on("reddit.com", ddgs_results("reddit.com", 1))
    web.on("instagram.com", ddgs_results("instagram.com", 5))
    # The backoff is long enough that a late-arriving cancellation still beats the retry.
    scraper = await start_scraper(min_results=10, retry_attempts=3, retry_backoff_s=0.3, retry_backoff_max_s=0.3)

    call = scraper.stub.Search(scraper_pb2.SearchRequest(query="rose tattoo"), timeout=10)
    first = await call.read()
    assert first.platform == RED
    call.cancel()
    await asyncio.sleep(0.3)  # let the cancellation reach the server
    release.set()
    await wait_until(lambda: all(c.finished is not None for c in web.calls))
    await asyncio.sleep(0.6)  # time in which a retry or tier 2 would have started

    assert len(web.calls_for("pinterest.com")) == 1
    assert web.calls_for("instagram.com") == []
    assert call.cancelled()

    # The same search left to run does retry Pinterest and goes on to Instagram,
    # so the assertions above do detect upstream work.
    call = scraper.stub.Search(scraper_pb2.SearchRequest(query="rose tattoo"), timeout=10)
    rest = await read_all(call)
    assert len(rest) == 6
    assert len(web.calls_for("pinterest.com")) == 1 + 3
    assert len(web.calls_for("instagram.com")) == 1


async def test_cache_hit_is_streamed_and_counted_then_expires(web: FakeWeb, start_scraper, clock: FakeClock) -> None:
    web.on("pinterest.com", ddgs_results("pinterest.com", 3))
    scraper = await start_scraper(cache_ttl_s=60)

    first, meta = await collect(scraper.stub, query="Rose  Tattoo")
    assert meta["x-scraper-cache"] == "miss"
    assert not any(c.from_cache for c in first)
    upstream = len(web.calls)

    # Same query up to case and spacing: served from the cache, nothing upstream.
    again, meta = await collect(scraper.stub, query="rose tattoo")
    assert meta["x-scraper-cache"] == "hit"
    assert [c.image_url for c in again] == [c.image_url for c in first]
    assert all(c.from_cache for c in again)
    assert [c.tier for c in again] == [c.tier for c in first]
    assert len(web.calls) == upstream

    # A different max_results is a different search.
    _, meta = await collect(scraper.stub, query="rose tattoo", max_results=2)
    assert meta["x-scraper-cache"] == "miss"
    upstream = len(web.calls)

    clock.advance(59)
    _, meta = await collect(scraper.stub, query="rose tattoo")
    assert meta["x-scraper-cache"] == "hit"

    clock.advance(2)  # past the TTL
    expired, meta = await collect(scraper.stub, query="rose tattoo")
    assert meta["x-scraper-cache"] == "miss"
    assert not any(c.from_cache for c in expired)
    assert len(web.calls) > upstream


async def test_results_with_a_failed_platform_are_not_cached(web: FakeWeb, start_scraper) -> None:
    def broken(query: str, n: int) -> list[dict]:
        raise DDGSException("500 Server Error")

    web.on("pinterest.com", broken)
    web.on("reddit.com", ddgs_results("reddit.com", 3))
    scraper = await start_scraper(cache_ttl_s=60)

    await collect(scraper.stub, query="rose tattoo")
    _, meta = await collect(scraper.stub, query="rose tattoo")

    assert meta["x-scraper-cache"] == "miss"
    assert len(web.calls_for("pinterest.com")) == 2

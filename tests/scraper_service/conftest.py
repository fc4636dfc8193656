"""Fixtures for the scraper tests: a fake web behind ``ddgs.DDGS`` and real servers on port 0.

Only the web search is faked, at the ``ddgs`` boundary; the gRPC server, the engines, the
tiers, the cache and the retries are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from scraper_service.config import ScraperSettings
from scraper_service.engines import duckduckgo
from scraper_service.server import create_server
from service_common.grpc_server import GrpcServer
from tattoo_search.v1 import scraper_pb2_grpc
from tests.scraper_service.fakes import FakeClock, FakeWeb


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> FakeWeb:
    fake = FakeWeb()

    class FakeDDGS:
        def __init__(self, proxy: str | None = None, timeout: int | None = 5, *, verify: bool | str = True) -> None:
            self.timeout = timeout

        def __enter__(self) -> FakeDDGS:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def images(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
            return fake.images(query, kwargs)

    monkeypatch.setattr(duckduckgo, "DDGS", FakeDDGS)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# Fast and small: retries barely wait, and nothing can hang for long.
TEST_SETTINGS = ScraperSettings(
    port=0,
    engines=("duckduckgo",),
    min_results=3,
    max_results=20,
    platform_timeout_s=3.0,
    retry_attempts=3,
    retry_backoff_s=0.01,
    retry_backoff_max_s=0.05,
    workers=4,
    grace_s=0,
)


@dataclass
class Scraper:
    """A running scraper server and a client channel to it."""

    server: GrpcServer
    port: int
    channel: grpc.aio.Channel
    stub: scraper_pb2_grpc.ScraperServiceStub


StartScraper = Callable[..., Awaitable[Scraper]]


@pytest_asyncio.fixture
async def start_scraper(clock: FakeClock) -> AsyncIterator[StartScraper]:
    """``await start_scraper(**settings_overrides)``: a fresh server on port 0 and a client."""
    running: list[Scraper] = []

    async def start(**overrides: Any) -> Scraper:
        settings = TEST_SETTINGS.replace(**overrides)
        server, port = await create_server(settings, clock=clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        scraper = Scraper(server, port, channel, scraper_pb2_grpc.ScraperServiceStub(channel))
        running.append(scraper)
        return scraper

    yield start
    for scraper in running:
        await scraper.channel.close()
        await scraper.server.stop(None)

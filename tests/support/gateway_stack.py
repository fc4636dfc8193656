"""The gateway tests' stack: the three real services on loopback port 0, and a candidate-image
site; the fixtures are used through tests/search_gateway/conftest.py (and tests/web/conftest.py).

Only what lies outside the machine is faked (DuckDuckGo at the ``ddgs`` boundary, a
remote vision model as a local HTTP server). The embed server runs tiny random models.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from search_gateway.config import GatewaySettings
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.gateway_support import (
    Hits,
    RunningGateway,
    embed_server,
    image_site_app,
    internal_app,
    run_gateway,
    scraper_server,
    serve_aiohttp,
    write_catalog,
)

GOOD = 12
HOSTILE = ("broken.jpg", "page.jpg", "truncated.jpg", "empty.jpg", "bomb.png", "huge.jpg", "slow.jpg",
           "endless.jpg", "redirect/internal", "redirect/internal-name", "redirect/metadata", "loop/0")


@pytest.fixture(scope="module")
def embed() -> Iterator[BackgroundServer]:
    with embed_server() as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel, timeout=60)
        yield server


@dataclass
class Site:
    port: int
    internal_port: int
    hits: Hits

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def good_urls(self, n: int = GOOD) -> list[str]:
        return [f"{self.base}/img/{i}.jpg" for i in range(n)]

    def hostile_urls(self) -> list[str]:
        internal = self.internal_port
        return [f"{self.base}/{path}" for path in HOSTILE] + [
            f"http://127.0.0.1:{internal}/secret-direct",
            f"http://localhost:{internal}/secret-by-name",
            f"http://[::ffff:127.0.0.1]:{internal}/secret-mapped",
            f"http://10.0.0.1:{internal}/secret-private",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
        ]




@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    hits = Hits()
    async with serve_aiohttp(internal_app(hits)) as internal_port:
        async with serve_aiohttp(image_site_app(hits, internal_port)) as port:
            yield Site(port, internal_port, hits)


@pytest_asyncio.fixture
async def scraper(site: Site, tmp_path: Path) -> AsyncIterator[BackgroundServer]:
    """The scraper on a catalog of the site's good images (a module may define its own)."""
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", site.good_urls())) as server:
        yield server


def gateway_settings(embed_target: str, scraper_target: str, site: Site | None, **overrides: Any) -> GatewaySettings:
    """Fast, strict settings for tests: short timeouts so hostile servers cost little."""
    base = GatewaySettings(
        port=0,
        embed_target=embed_target,
        scraper_target=scraper_target,
        fetch_allow=(f"127.0.0.1:{site.port}",) if site else (),
        search_budget_s=6.0,
        connect_timeout_s=1.0,
        read_timeout_s=0.5,
        download_timeout_s=1.5,
        download_retries=1,
        retry_backoff_s=0.01,
        download_max_bytes=2 * 1024 * 1024,
        upload_max_bytes=2 * 1024 * 1024,
        rate_limit_per_minute=0,
        embed_timeout_s=5.0,
        scraper_timeout_s=5.0,
        reconnect_backoff_max_ms=300,
        # Off unless a test gives it a folder of its own (test_gateway_gallery.py): the
        # default var/gallery is shared by everyone's runs and may be opened by one process only.
        gallery="off",
        # The link checker downloads gallery URLs on its own clock: off unless a test asks
        # (tests/search_gateway/collections/test_results_never_rot.py), so hit counts stay exact.
        link_checks_per_minute=0,
    )
    return base.replace(**overrides)


@dataclass
class Stack:
    gateway: RunningGateway
    site: Site
    scraper: BackgroundServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest_asyncio.fixture
async def stack(embed: BackgroundServer, site: Site, tmp_path: Path) -> AsyncIterator[Stack]:
    """Embed server + catalog scraper (good and hostile candidates) + gateway."""
    catalog = write_catalog(tmp_path / "catalog.jsonl", site.good_urls() + site.hostile_urls())
    with scraper_server(catalog) as scraper:
        async with run_gateway(gateway_settings(embed.target, scraper.target, site)) as gateway:
            async with aiohttp.ClientSession() as http:
                yield Stack(gateway, site, scraper, http)


def image_form(data: bytes, field: str = "file", filename: str = "query.jpg",
               content_type: str = "image/jpeg") -> aiohttp.FormData:
    form = aiohttp.FormData()
    # A file object, not bytes: aiohttp warns (an error here) about large bytes payloads.
    form.add_field(field, io.BytesIO(data), filename=filename, content_type=content_type)
    return form

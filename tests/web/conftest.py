"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and the three
real services on loopback with the scraper's demo catalog of drawn tattoo designs.

The browser is never downloaded here: ``scripts/install-browser.sh`` (run by the
project's test set-up) installs Debian's ``chromium``. Without it these tests FAIL with
a message saying so, unless ``WEB_TESTS=skip`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from scraper_service.demo_catalog import write_catalog
from tests.support.background import BackgroundServer
from tests.support.gateway_stack import embed, gateway_settings  # noqa: F401 - embed is a fixture used here
from tests.support.gateway_support import RunningGateway, run_gateway, scraper_server, serve_aiohttp
from tests.support.images import jpeg

CHROMIUM = os.environ.get("WEB_CHROMIUM", "/usr/bin/chromium")
# The flags that work in containers and CI: no sandbox (root), no GPU, nothing phoning home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
DESIGNS = 15  # drawn designs; the scraper's first tier skips Instagram's, so 11 + "fragile" are ranked


def _browser_missing(why: str) -> None:
    if os.environ.get("WEB_TESTS") == "skip":
        pytest.skip(f"WEB_TESTS=skip: {why}")
    pytest.fail(f"{why}. Run scripts/install-browser.sh (make test does), or set WEB_TESTS=skip to skip "
                "the browser tests on purpose.", pytrace=False)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        _browser_missing(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _browser_missing("The playwright Python package is missing (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class DesignSite:
    """The demo catalog's pictures on a loopback HTTP server, plus two special images."""

    port: int
    directory: Path
    manifest: Path
    fragile_hits: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def image(self, slug: str) -> Path:
        return self.directory / "images" / f"{slug}.png"


def _design_app(directory: Path, fragile_hits: list[str]) -> web.Application:
    async def fragile(request: web.Request) -> web.Response:
        # Served once (the search downloads it), gone afterwards: its thumbnail breaks.
        fragile_hits.append(request.path)
        if len(fragile_hits) > 1:
            raise web.HTTPNotFound()
        return web.Response(body=jpeg(5, (256, 256)), content_type="image/jpeg")

    async def not_an_image(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><p>moved</p>", content_type="image/png")

    app = web.Application()
    app.router.add_get("/extra/fragile.jpg", fragile)
    app.router.add_get("/extra/moved.png", not_an_image)
    app.router.add_static("/images", directory / "images")
    app.router.add_static("/designs", directory / "designs")
    return app


@pytest_asyncio.fixture
async def design_site(tmp_path: Path) -> AsyncIterator[DesignSite]:
    directory = tmp_path / "demo"
    for sub in ("images", "designs"):
        (directory / sub).mkdir(parents=True)
    hits: list[str] = []
    async with serve_aiohttp(_design_app(directory, hits)) as port:
        base = f"http://127.0.0.1:{port}"
        manifest = write_catalog(directory, base, count=DESIGNS)
        with manifest.open("a", encoding="utf-8") as out:
            for name, title in (("fragile.jpg", "Flash sheet (taken down)"), ("moved.png", "Moved design")):
                out.write(json.dumps({"url": f"{base}/extra/{name}", "source_url": f"{base}/designs/",
                                      "platform": "reddit", "title": title, "tags": ["tattoo", "flash"]}) + "\n")
        yield DesignSite(port, directory, manifest, hits)


@dataclass
class WebStack:
    gateway: RunningGateway
    site: DesignSite
    scraper: BackgroundServer

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest_asyncio.fixture
async def web_stack(embed: BackgroundServer, design_site: DesignSite) -> AsyncIterator[WebStack]:  # noqa: F811
    """Embed server (tiny random models) + catalog scraper + gateway serving the page."""
    with scraper_server(design_site.manifest) as scraper:
        async with run_gateway(gateway_settings(embed.target, scraper.target, design_site)) as gateway:  # type: ignore[arg-type]
            yield WebStack(gateway, design_site, scraper)


@pytest_asyncio.fixture
async def gallery_stack(embed: BackgroundServer, design_site: DesignSite, tmp_path: Path) -> AsyncIterator[WebStack]:  # noqa: F811
    """The same stack with the embedded gallery on (and collections' originals), in this test's own folder."""
    with scraper_server(design_site.manifest) as scraper:
        settings = gateway_settings(embed.target, scraper.target, design_site,  # type: ignore[arg-type]
                                    gallery="on", gallery_path=tmp_path / "gallery", blobs_path=tmp_path / "blobs")
        async with run_gateway(settings) as gateway:
            yield WebStack(gateway, design_site, scraper)

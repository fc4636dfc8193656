"""The search page against a gateway that requires API keys (GATEWAY_API_KEYS), in headless
Chromium with the three real services on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import run_gateway, scraper_server
from tests.web.conftest import DesignSite

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

KEY = "right-key-7f3a"
STORE = "tattoo-search.api-key"
TIMEOUT_MS = 20_000
IMAGE_LOADED = "(img) => img.complete && img.naturalWidth > 0"


async def _enter_key(page: Any, key: str) -> None:
    dialog = page.locator("#key-dialog")
    await dialog.wait_for(state="visible")
    await page.fill("#key-input", key)
    await page.click("#key-submit")


async def test_the_page_asks_for_a_key_asks_again_when_refused_and_searches_with_it(
        browser: Any, embed: BackgroundServer, design_site: DesignSite) -> None:
    with scraper_server(design_site.manifest) as scraper:
        settings = gateway_settings(embed.target, scraper.target, design_site, api_keys=(KEY, "another-key"))  # type: ignore[arg-type]
        async with run_gateway(settings) as gateway:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
            sent: list[tuple[str, str | None]] = []  # (url, X-API-Key) of every request the page made
            page.on("request", lambda req: sent.append((req.url, req.headers.get("x-api-key"))))
            await page.goto(f"{gateway.url}/")

            # The model list got 401: the page's own dialog asks (not window.prompt).
            await page.locator("#key-dialog").wait_for(state="visible")
            assert "needs an API key" in await page.locator("#key-message").inner_text()
            await _enter_key(page, "wrong-key")
            # Refused: asked again, saying so.
            await page.locator("#key-message", has_text="not accepted").wait_for()
            assert await page.locator("#key-dialog").is_visible()
            await _enter_key(page, KEY)
            await page.locator("#key-dialog").wait_for(state="hidden")
            await page.locator("#model-info .badge.warning", has_text="random weights").wait_for()

            await page.set_input_files("#file", str(design_site.image("blackwork-mandala-0")))
            await page.click("#search")
            await page.locator("#counts", has_text="Done").wait_for()
            cards = page.locator("#results .card")
            assert await cards.count() > 0
            # Thumbnails are loaded with the key in a header and shown from blob: URLs.
            first = page.locator("#results .card:not(.broken) .thumb img").first
            await page.wait_for_function(IMAGE_LOADED, arg=await first.element_handle())
            assert (await first.get_attribute("src") or "").startswith("blob:")

            # A key refused later (revoked, or another one pasted) is asked for again.
            await page.evaluate(f"() => sessionStorage.setItem({STORE!r}, 'stale-key')")
            await page.click("#search")
            await page.locator("#key-message", has_text="not accepted").wait_for()
            await _enter_key(page, KEY)
            await page.locator("#counts", has_text="Done").wait_for()
            assert await cards.count() > 0

            # Kept for the tab only: in sessionStorage, never in a cookie or a URL.
            assert await page.evaluate(f"() => sessionStorage.getItem({STORE!r})") == KEY
            assert await page.evaluate(f"() => localStorage.getItem({STORE!r})") is None
            assert KEY not in await page.evaluate("() => document.cookie")
            assert KEY not in page.url
            assert not [url for url, _ in sent if KEY in url]
            calls = [(url, key) for url, key in sent if "/search/stream" in url or "/thumbnails/" in url]
            assert calls and {key for _, key in calls} <= {KEY, "stale-key"}, calls
            assert problems == []
            await page.close()

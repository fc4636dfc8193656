"""What the browser tests share: where screenshots go, the wait for a loaded image, opening
the page, the ids of the cards shown."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.gateway_support import RunningGateway
from tests.web.conftest import WebStack

# The committed screenshots in docs/screenshots are refreshed with UPDATE_SCREENSHOTS=1;
# otherwise they go to a temporary folder, so a test run leaves the tree clean.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="web-screenshots-"))
)


TIMEOUT_MS = 20_000


IMAGE_LOADED = "(img) => img.complete && img.naturalWidth > 0"


async def _open_page(browser: Any, stack: WebStack | RunningGateway, **context: Any) -> tuple[Any, list[str]]:
    page = await browser.new_page(**context)
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text else None)
    await page.goto(f"{stack.url}/")
    # The page has read the models and whether this gateway has a gallery.
    await page.locator("#search-form[data-gallery]").wait_for(state="attached")
    return page, problems


CARD_IDS = "() => [...document.querySelectorAll('#images .image-card')].map((c) => c.dataset.id)"


# ---- A search on the page and the gallery's background writer (the gallery, marks and filter tests)

WRITTEN = re.compile(r'^gateway_gallery_points_total\{result="written"\} (\S+)$', re.MULTILINE)
# Every card's source and gallery id, in the order shown.
CARDS = "() => [...document.querySelectorAll('#results .card')].map((c) => [c.dataset.source, c.dataset.id])"
# A card whose thumbnail has loaded, or been given up on (the design site dropped "fragile").
CARD_SETTLED = ("(card) => card.classList.contains('broken') || "
                "[...card.querySelectorAll('.thumb img')].every((i) => i.complete && i.naturalWidth > 0)")


async def _pick(page: Any, radio: str) -> None:
    """Picks a source as a person does: a click on its label (the radio itself is drawn by it)."""
    await page.click(f"label[for={radio}]")
    assert await page.locator(f"#{radio}").is_checked()


async def _search(page: Any, button: str = "#search") -> None:
    await page.click(button)
    await page.locator("#counts", has_text="Done").wait_for()
    await page.wait_for_function("() => !document.getElementById('search').disabled")


async def _written(stack: WebStack, at_least: int) -> int:
    """Waits for the gallery's background writer to have stored `at_least` points."""
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            async with http.get(f"{stack.url}/metrics") as resp:
                found = WRITTEN.search(await resp.text())
            written = int(float(found.group(1))) if found else 0
            if written >= at_least:
                return written
            await asyncio.sleep(0.05)
    raise AssertionError(f"the gallery writer stored {written} of {at_least} pictures")


async def _wait_thumbnails(page: Any, selector: str = "#results .card") -> None:
    cards = page.locator(selector)
    for i in range(await cards.count()):
        await cards.nth(i).scroll_into_view_if_needed()  # thumbnails load lazily
        await page.wait_for_function(CARD_SETTLED, arg=await cards.nth(i).element_handle())
    await page.evaluate("() => window.scrollTo(0, 0)")

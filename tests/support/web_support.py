"""What the browser tests share: where screenshots go, the wait for a loaded image, opening
the page, the ids of the cards shown."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

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

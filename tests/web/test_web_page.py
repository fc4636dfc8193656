"""The search page in headless Chromium against the three real services on loopback.

The results and analysis tests also take screenshots (in docs/screenshots/ with
UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import RunningGateway, run_gateway
from tests.support.images import jpeg
from tests.support.web_support import IMAGE_LOADED, SCREENSHOTS, TIMEOUT_MS
from tests.web.conftest import DesignSite, WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

# Records every value the progress bar takes, from before the search starts.
RECORD_PROGRESS = """() => {
  window.__progress = [];
  const bar = document.getElementById("progress");
  new MutationObserver(() => window.__progress.push(Number(bar.value)))
    .observe(bar, { attributes: true, attributeFilter: ["value"] });
}"""



async def _open_page(browser: Any, stack: WebStack | RunningGateway, **context: Any) -> tuple[Any, list[str]]:
    page = await browser.new_page(**context)
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text else None)
    await page.goto(f"{stack.url}/")
    # The model list came from GET /models, with the tiny models' random weights flagged.
    await page.locator("#model-info .badge.warning", has_text="random weights").wait_for()
    return page, problems


async def test_image_search_shows_progress_results_and_the_analysis(browser: Any, web_stack: WebStack) -> None:
    page, problems = await _open_page(browser, web_stack, viewport={"width": 1280, "height": 900})
    options = await page.locator("#model option").all_text_contents()
    assert any(o.startswith("clip (") and "random weights" in o for o in options), options

    await page.set_input_files("#file", str(web_stack.site.image("blackwork-mandala-0")))
    await page.wait_for_function("() => document.getElementById('preview-img').naturalWidth > 0")
    await page.fill("#max-results", "20")
    await page.evaluate(RECORD_PROGRESS)
    await page.click("#search")

    cards = page.locator("#results .card")
    await page.locator("#counts", has_text="Done").wait_for()
    await page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
    # Every candidate downloaded is ranked and shown (20 asked for); the non-image failed.
    counts = re.search(r"found (\d+) · downloaded (\d+) \(1 failed\) · ranked (\d+)",
                       await page.locator("#counts").inner_text())
    assert counts, await page.locator("#counts").inner_text()
    found, downloaded, ranked = map(int, counts.groups())
    shown = await cards.count()
    assert shown == ranked == downloaded == found - 1 and shown >= 6, counts.groups()
    assert "Looked for:" in await page.locator("#caption").inner_text()
    # The tiny caption model runs random weights: its caption is shown as the guess it is.
    assert "(a guess: the caption model runs random weights)" in await page.locator("#caption").inner_text()

    # The bar moved through intermediate values before it reached 100.
    values: list[float] = await page.evaluate("() => window.__progress")
    assert values[-1] == 100, values
    assert any(0 < v < 100 for v in values), values
    assert values == sorted(values), values

    scores = await page.locator("#results .score-value").all_text_contents()
    assert all(re.fullmatch(r"-?\d+\.\d%", s) for s in scores), scores
    assert scores[0] == "100.0%"  # the query image itself is in the catalog
    assert await page.locator("#results-summary .badge", has_text="random weights").count() == 1
    first_link = page.locator("#results .card").first.locator("a.source-link")
    assert (await first_link.get_attribute("href") or "").startswith(web_stack.site.base + "/designs/")

    # Thumbnails come through the gateway's signed route; the one whose site dropped it
    # becomes a placeholder after one retry.
    await page.locator("#results .card.broken .placeholder").wait_for()
    assert await page.locator("#results .card.broken").count() == 1
    thumbs = page.locator("#results .card:not(.broken) .thumb img")
    assert await thumbs.count() == shown - 1
    for i in range(shown - 1):
        await thumbs.nth(i).scroll_into_view_if_needed()
        assert (await thumbs.nth(i).get_attribute("src") or "").startswith("/thumbnails/")
        await page.wait_for_function(IMAGE_LOADED, arg=await thumbs.nth(i).element_handle())
    await page.evaluate("() => window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "results.png"), full_page=True)

    # Analyze the best result: both pictures load and the summary is shown.
    analyze = cards.first.locator("button.analyze")
    await analyze.click()
    dialog = page.locator("#analysis")
    await dialog.locator("#analysis-status", has_text="compared with your image").wait_for()
    for picture in ("#analysis-heatmap", "#analysis-lines"):
        assert await page.locator(picture).evaluate(IMAGE_LOADED), picture
    summary = await page.locator("#analysis-summary").inner_text()
    assert "Whole-image similarity" in summary and "Patches with a strong match" in summary
    await page.set_viewport_size({"width": 1280, "height": 1500})
    await page.screenshot(path=str(SCREENSHOTS / "analysis.png"))

    # Escape closes it and focus returns to the button that opened it.
    await page.keyboard.press("Escape")
    await page.locator("#analysis").wait_for(state="hidden")
    assert await analyze.evaluate("(b) => document.activeElement === b")
    assert not problems, problems


async def test_plain_errors_text_search_and_a_phone_sized_screen(browser: Any, web_stack: WebStack, tmp_path: Path) -> None:
    page, problems = await _open_page(browser, web_stack, viewport={"width": 390, "height": 844}, is_mobile=True)
    # Nothing wider than the phone's screen.
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

    # Searching with nothing picked says what to do, without asking the server.
    await page.click("#search")
    await page.locator("#error", has_text="Pick an image").wait_for()

    # A file that is not a picture: the gateway judges the content and the page says so.
    notes = tmp_path / "notes.jpg"
    notes.write_text("shopping list: ink, needles, gloves\n")
    await page.set_input_files("#file", str(notes))
    await page.locator("#preview-name", has_text="no preview").wait_for()
    await page.click("#search")
    error = page.locator("#error")
    await error.locator(".error-message", has_text="That file is not an image").wait_for()
    assert await error.get_attribute("role") == "alert"
    assert await page.locator("#search").is_enabled()

    # Over the upload limit (2 MB in these settings): refused by size, before any decoding.
    big = tmp_path / "huge.jpg"
    big.write_bytes(jpeg(1) + b"\0" * (3 * 1024 * 1024))
    await page.set_input_files("#file", str(big))
    await page.click("#search")
    await error.locator(".error-message", has_text="That image is too large").wait_for()

    # Text search with the clip text tower, keyboard only: Enter in the text field submits.
    await page.click("#clear-file")
    await page.fill("#text", "blackwork rose")
    await page.press("#text", "Enter")
    await page.locator("#counts", has_text="Done").wait_for()
    assert await page.locator("#error").is_hidden()
    assert await page.locator("#caption").inner_text() == "Looked for: “blackwork rose”"
    assert await page.locator("#results .card").count() > 0
    assert await page.locator("#results button.analyze").count() == 0  # Analyze needs an image query
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)  # kept by pytest's tmp_path, to look at
    assert not problems, problems


async def test_cancel_stops_a_running_search(browser: Any, web_stack: WebStack) -> None:
    page, problems = await _open_page(browser, web_stack)
    # Hold the stream request so the search is still running when Cancel is pressed.
    held: list[Any] = []
    await page.route("**/search/stream*", lambda route: held.append(route))
    await page.fill("#text", "mandala")
    await page.click("#search")
    await page.wait_for_function("() => !document.getElementById('cancel').disabled")
    assert await page.locator("#search").is_disabled()
    await page.click("#cancel")
    await page.locator("#counts", has_text="Search cancelled.").wait_for()
    assert await page.locator("#search").is_enabled() and await page.locator("#cancel").is_disabled()
    assert await page.locator("#error").is_hidden()
    assert len(held) == 1
    await page.unroute("**/search/stream*")
    assert not problems, problems


async def test_a_backend_down_is_said_in_plain_words(browser: Any, embed: BackgroundServer, design_site: DesignSite) -> None:
    # No scraper listens on port 1: every search fails with 503, the page says to try again.
    async with run_gateway(gateway_settings(embed.target, "127.0.0.1:1", design_site)) as gateway:  # type: ignore[arg-type]
        page, problems = await _open_page(browser, gateway)
        await page.fill("#text", "rose")
        await page.click("#search")
        message = page.locator("#error .error-message")
        await message.wait_for()
        assert "unavailable right now" in await message.inner_text() and "try again" in await message.inner_text()
        assert await page.locator("#search").is_enabled()
        assert not problems, problems


async def test_the_page_is_served_with_a_strict_content_security_policy(web_stack: WebStack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{web_stack.url}/") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            csp = resp.headers["Content-Security-Policy"]
            html = await resp.text()
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in html and "http://" not in html and "https://" not in html  # offline, no CDN
        for path, kind in (("/static/app.js", "javascript"), ("/static/api.js", "javascript"), ("/static/app.css", "css")):
            async with http.get(f"{web_stack.url}{path}") as resp:
                assert resp.status == 200 and kind in resp.headers["Content-Type"], path
                assert resp.headers["X-Content-Type-Options"] == "nosniff"

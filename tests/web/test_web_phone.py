"""The page on a phone (issue 22) in headless Chromium: the camera input next to "Choose
file", the layout at 360 px wide (no sideways scroll, tap targets of at least 44 px), and
installability: the web app manifest linked from the page, served with its type through
the static route (the CSP allows it), its icons loading, and no service worker.

Writes docs/screenshots/phone.png with UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.support.web_support import SCREENSHOTS, _open_page, _search, _wait_thumbnails
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
# Everything a finger may tap in the search view that is shown, with its size.
TAP_TARGETS = """() => [...document.querySelectorAll(
    '#search-view button, #search-view select, #search-view input:not(.visually-hidden), #search-view a, ' +
    '#search-view summary, #search-view .chip label, #search-view .segmented label, #search-view .pick-button')]
  .filter((e) => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
  .filter((e) => !(e.type === 'checkbox' || e.type === 'radio') || getComputedStyle(e).opacity !== '0')
  .map((e) => (e.type === 'checkbox' || e.type === 'radio') && e.labels.length ? e.labels[0] : e)  // a tick box: its label
  .map((e) => { const r = e.getBoundingClientRect();
    return [e.id || e.className || e.textContent.trim().slice(0, 30), Math.round(r.width), Math.round(r.height)]; })"""
NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= 360"


async def test_phone_camera_layout_at_360_px_and_tap_targets(browser: Any, gallery_stack: WebStack) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, **PHONE)
    assert await page.evaluate(NO_SIDEWAYS_SCROLL)

    # "Take a photo" opens the back camera; "Choose file" still picks from the library.
    camera = page.locator("#camera")
    assert await camera.get_attribute("capture") == "environment"
    assert await camera.get_attribute("accept") == "image/*"
    assert await page.locator("label.camera-button").is_visible()  # a touch screen: offered
    assert await page.locator("#file").get_attribute("capture") is None
    assert await page.locator("label.pick-button", has_text="Choose file").is_visible()
    # A photo from the camera is the query, like a chosen file.
    await page.set_input_files("#camera", str(stack.site.image("blackwork-mandala-0")))
    await page.wait_for_function("() => document.getElementById('preview-img').naturalWidth > 0")
    await page.fill("#max-results", "6")
    await _search(page)
    assert await page.locator("#results .card").count() == 6
    # Marks on a phone: the thumbs are tappable and the strip fits.
    await page.locator("#results .card button.mark-up").first.click()
    await page.locator("#results .card button.mark-down").nth(2).click()
    assert await page.locator("#marked .marked-item").count() == 2

    # The placement and tag chips open, so their chips are measured too.
    for details in ("#placement-field", "#tags-field"):
        if await page.locator(details).is_visible():
            await page.locator(f"{details} summary").click()
    assert await page.locator("#placement label").first.is_visible()
    assert await page.evaluate(NO_SIDEWAYS_SCROLL), await page.evaluate("() => document.documentElement.scrollWidth")
    small = [t for t in await page.evaluate(TAP_TARGETS) if t[1] < 44 or t[2] < 44]
    assert not small, small
    for details in ("#placement-field", "#tags-field"):  # closed again for the picture
        await page.locator(details).evaluate("(d) => { d.open = false; }")
    await _wait_thumbnails(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The whole page in one viewport as tall as it (a full_page screenshot re-emulates the
    # screen without touch, which would hide the camera button from the picture).
    await page.set_viewport_size({"width": 360, "height": await page.evaluate("() => document.documentElement.scrollHeight")})
    assert await page.locator("label.camera-button").is_visible()
    await page.screenshot(path=str(SCREENSHOTS / "phone.png"), scale="css")  # 360 px wide, as the phone lays it out
    assert not problems, problems


async def test_the_page_is_installable_with_its_manifest_and_icons(browser: Any, web_stack: WebStack) -> None:
    page, problems = await _open_page(browser, web_stack, **PHONE)
    href = await page.locator('link[rel="manifest"]').get_attribute("href")
    assert href == "/static/manifest.webmanifest"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{web_stack.url}/") as resp:
            csp = resp.headers["Content-Security-Policy"]
        assert "manifest-src 'self'" in csp  # default-src 'none' would block it otherwise
        async with http.get(f"{web_stack.url}{href}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/manifest+json"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"  # the static route's headers
            manifest = json.loads(await resp.read())
        assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
        assert manifest["name"] and manifest["short_name"] and manifest["theme_color"] and manifest["background_color"]
        sizes = set()
        for icon in manifest["icons"]:
            async with http.get(f"{web_stack.url}{icon['src']}") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "image/png", icon
                picture = Image.open(io.BytesIO(await resp.read()))
            assert f"{picture.width}x{picture.height}" == icon["sizes"] and picture.format == "PNG", icon
            sizes.add((icon["sizes"], icon.get("purpose", "any")))
        assert {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")} <= sizes

    # No service worker: nothing can cache an API reply.
    assert await page.evaluate("() => navigator.serviceWorker.getRegistrations().then((r) => r.length)") == 0
    assert not problems, problems


async def test_chromium_finds_nothing_missing_to_install_it(web_stack: WebStack, tmp_path: Path) -> None:
    """Chromium's own check. A page of an incognito context (the ``browser`` fixture's) is never
    installable, so this one runs in a browser with a profile of its own (a tmp folder)."""
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip("no Chromium: the other browser tests say how to install it")
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, **PHONE)
        try:
            page = await context.new_page()
            await page.goto(f"{web_stack.url}/")
            cdp = await context.new_cdp_session(page)
            parsed = await cdp.send("Page.getAppManifest")
            assert parsed["url"].endswith("/static/manifest.webmanifest") and not parsed["errors"], parsed
            installability = await cdp.send("Page.getInstallabilityErrors")
            assert installability["installabilityErrors"] == [], installability
        finally:
            await context.close()

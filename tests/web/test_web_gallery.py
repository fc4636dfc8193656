"""The gallery on the search page (issue 12) in headless Chromium: the source switch,
results marked by source, "More like this", and the switch hidden when the gateway
has no gallery. The three real services on loopback, the embedded store in a tmp folder.

The gallery test also takes a screenshot (docs/screenshots/gallery.png with
UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import CountedScraper, run_gateway
from tests.support.web_support import CARDS, IMAGE_LOADED, SCREENSHOTS, _open_page, _pick, _search, _wait_thumbnails, _written
from tests.web.conftest import DesignSite, WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

# The cards of the first non-empty list the page shows during a search (before the final one).
RECORD_FIRST_CARDS = """() => {
  window.__firstCards = null;
  const list = document.getElementById("results");
  new MutationObserver(() => {
    if (window.__firstCards === null && list.children.length)
      window.__firstCards = [...list.children].map((c) => [c.dataset.source, c.dataset.id]);
  }).observe(list, { childList: true });
}"""


async def test_gallery_results_more_like_this_and_the_source_switch(browser: Any, gallery_stack: WebStack) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, viewport={"width": 1280, "height": 900})
    switch = page.locator("#sources-field")
    assert await switch.is_visible()
    assert await page.locator("#sources-both").is_checked()  # the default: both
    query = str(stack.site.image("blackwork-mandala-0"))

    # A web search fills the gallery (every picture it embeds, by the background writer).
    await _pick(page, "sources-web")
    await page.set_input_files("#file", query)
    await _search(page)
    web = await page.evaluate(CARDS)
    assert len(web) >= 6 and all(source == "web" for source, _ in web), web
    assert await page.locator("#results .card .source-badge", has_text="web").count() == len(web)
    await _written(stack, len(web))

    # Gallery only: the same picture answers at once from the store, no scraper call.
    scraper = CountedScraper(stack.gateway)
    await _pick(page, "sources-gallery")
    await _search(page)
    assert scraper.calls == 0
    gallery = await page.evaluate(CARDS)
    assert len(gallery) >= 6 and all(source == "gallery" for source, _ in gallery), gallery
    assert {i for _, i in gallery} <= {i for _, i in web}
    first = page.locator("#results .card").first
    assert await first.locator(".score-value").inner_text() == "100.0%"  # the query picture itself
    assert await first.locator(".source-badge").text_content() == "From the gallery"  # words, not colour alone
    assert await page.locator("#results button.more-like").count() == len(gallery)
    assert re.search(r"Done.*: \d+ from the gallery$", await page.locator("#counts").inner_text())

    # More like this on the first: the stored picture is the query ("Like:" and its thumbnail),
    # with the model and sources picked; the list is what the API answers for like=<id>.
    liked_id = gallery[0][1]
    liked_thumb = await first.locator(".thumb img").get_attribute("src")
    await first.locator("button.more-like").click()
    await page.locator("#caption", has_text="Looked for: designs like").wait_for()
    await page.locator("#counts", has_text="Done").wait_for()
    assert await page.locator("#preview-like").inner_text() == "Like:"
    assert await page.locator("#preview-img").get_attribute("src") == liked_thumb
    await page.wait_for_function(IMAGE_LOADED, arg=await page.locator("#preview-img").element_handle())
    liked = await page.evaluate(CARDS)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.url}/search", params={"like": liked_id, "sources": "gallery",
                                                            "embedding_model": "clip"}) as resp:
            expected = await resp.json()
    assert [r["id"] for r in expected["results"]] == [i for _, i in liked], (expected, liked)
    assert liked and all(source == "gallery" for source, _ in liked) and liked_id not in [i for _, i in liked]
    assert scraper.calls == 0
    await _wait_thumbnails(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "gallery.png"), full_page=True)

    # Both: the gallery's cards come first (the stream's first event), then the web's merge
    # in, one card per picture.
    await page.click("#clear-file")
    await page.set_input_files("#file", query)
    await _pick(page, "sources-both")
    await page.evaluate(RECORD_FIRST_CARDS)
    await _search(page)
    early = await page.evaluate("() => window.__firstCards")
    assert early and all(source == "gallery" for source, _ in early), early
    both = await page.evaluate(CARDS)
    ids = [i for _, i in both]
    assert len(ids) == len(set(ids)) and all(ids), both
    assert scraper.calls == 1

    # Web only again: every card is marked web, keyboard only (arrow keys move the switch).
    await page.focus("#sources-both")
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")
    assert await page.locator("#sources-web").is_checked()
    await _search(page)
    again = await page.evaluate(CARDS)
    assert again and all(source == "web" for source, _ in again), again
    assert await page.locator("#results button.more-like").count() == 0
    assert not problems, problems


async def test_tag_chips_filter_the_gallery(browser: Any, gallery_stack: WebStack, tmp_path: Path) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, viewport={"width": 390, "height": 844}, is_mobile=True)
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await _pick(page, "sources-web")
    assert await page.locator("#tags-field").is_hidden()  # tags filter gallery results only
    await page.set_input_files("#file", str(stack.site.image("blackwork-mandala-0")))
    await _search(page)
    await _written(stack, await page.locator("#results .card").count())

    await _pick(page, "sources-gallery")
    await page.locator("#tags-field summary").click()
    chips = page.locator("#tags input[type=checkbox]")
    assert await chips.count() == 60  # the vocabulary, from the OpenAPI description
    await _search(page)
    everything = await page.locator("#results .card .tags").all_inner_texts()
    tag = everything[0].removeprefix("Tags: ").split(", ")[0]
    await page.locator("#tags label", has_text=re.compile(f"^{re.escape(tag)}$")).click()
    assert await page.locator("#tags-count").inner_text() == "(1 picked)"
    await _search(page)
    shown = await page.evaluate(CARDS)
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", stack.site.image("blackwork-mandala-0").read_bytes(), filename="q.png")
        async with http.post(f"{stack.url}/search", data=form,
                             params={"sources": "gallery", "tags": tag, "embedding_model": "clip"}) as resp:
            expected = await resp.json()
    # What the API answers with that tag: every result carries it (the store applied the filter).
    assert expected["results"] and all(tag in r["tags"] for r in expected["results"])
    assert [i for _, i in shown] == [r["id"] for r in expected["results"]]
    assert all(source == "gallery" for source, _ in shown)
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(tmp_path / "phone-gallery.png"), full_page=True)  # kept by pytest's tmp_path, to look at
    assert not problems, problems


async def test_no_gallery_hides_the_switch(browser: Any, web_stack: WebStack) -> None:
    # GATEWAY_GALLERY=off (the web stack): the OpenAPI description lists sources as web-only.
    page, problems = await _open_page(browser, web_stack)
    assert await page.get_attribute("#search-form", "data-gallery") == "off"
    assert await page.locator("#sources-field").is_hidden() and await page.locator("#tags-field").is_hidden()

    # When the description cannot be read the switch is offered; the gateway's 400 for a
    # gallery search takes it away, in plain words.
    await page.route("**/openapi.json", lambda route: route.abort())
    await page.reload()
    await page.locator("#search-form[data-gallery=unknown]").wait_for(state="attached")
    await _pick(page, "sources-gallery")
    await page.fill("#text", "rose")
    await page.click("#search")
    await page.locator("#error .error-message", has_text="This server has no gallery").wait_for()
    assert await page.locator("#sources-field").is_hidden()
    await page.unroute("**/openapi.json")
    await _search(page)  # sources no longer sent: the web answers
    assert await page.locator("#results .card[data-source=web]").count() > 0
    assert not problems, problems


async def test_an_unreachable_gallery_is_said_and_the_web_answers(
        browser: Any, embed: BackgroundServer, design_site: DesignSite, tmp_path: Path) -> None:
    from tests.support.gateway_support import scraper_server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with scraper_server(design_site.manifest) as scraper:
        settings = gateway_settings(embed.target, scraper.target, design_site, gallery="on",  # type: ignore[arg-type]
                                    gallery_path=tmp_path / "unused", gallery_url=f"http://127.0.0.1:{closed}")
        async with run_gateway(settings) as gateway:
            page, problems = await _open_page(browser, gateway)
            await page.fill("#text", "mandala")
            await _search(page)
            notice = page.locator("#results-summary .gallery-notice")
            assert "The gallery is unavailable; showing web results only." in await notice.inner_text()
            assert await page.locator("#results .card[data-source=web]").count() > 0

            await _pick(page, "sources-gallery")
            await page.click("#search")
            message = page.locator("#error .error-message")
            await message.wait_for()
            assert "The gallery is unavailable right now" in await message.inner_text()
            assert not problems, problems

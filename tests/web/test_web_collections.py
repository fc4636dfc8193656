"""Private collections on the search page (issue 13) in headless Chromium: create one (a bad
name refused in words), add a folder of pictures (one not an image: listed with its reason),
see and remove pictures, search only that collection, delete it after a confirm step.
The three real services on loopback, the embedded store and the blob store in a tmp folder.

Takes docs/screenshots/collections.png (with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.images import jpeg
from tests.support.web_support import CARD_IDS, IMAGE_LOADED, SCREENSHOTS, _open_page
from tests.web.conftest import WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

NAME = "studio-flash"
RESULT_IDS = "() => [...document.querySelectorAll('#results .card')].map((c) => c.dataset.id)"


async def test_a_collection_from_creation_to_search_to_deletion(browser: Any, gallery_stack: WebStack,
                                                                tmp_path: Path) -> None:
    page, problems = await _open_page(browser, gallery_stack, viewport={"width": 1280, "height": 900})
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/search/stream" in r.url else None)

    # The view is offered (the gateway has a gallery), reached by a real button.
    await page.locator("#views").wait_for()
    await page.click("#view-collections")
    assert await page.locator("#search-view").is_hidden()
    assert await page.get_attribute("#view-collections", "aria-current") == "page"

    # A bad name: the server's rule, in words, next to the form.
    await page.fill("#new-name", "Bad Name!")
    await page.press("#new-name", "Enter")
    error = page.locator("#collections-error")
    await error.wait_for()
    said = await error.inner_text()
    assert "That name cannot be used" in said and "a-z" in said and "'Bad Name!'" in said, said

    await page.fill("#new-name", NAME)
    await page.click("#create")
    await page.locator("#collection-heading", has_text=NAME).wait_for()
    assert await error.is_hidden()
    assert await page.locator(f".collection-button[data-name={NAME}] .collection-count").inner_text() == "0 images"

    # A folder with two pictures and a text file, through the folder picker (webkitdirectory).
    folder = tmp_path / "portfolio"
    (folder / "inked").mkdir(parents=True)
    keep, drop = jpeg(21, (300, 260)), jpeg(22, (280, 300))
    (folder / "keep.jpg").write_bytes(keep)
    (folder / "inked" / "drop.jpg").write_bytes(drop)
    (folder / "notes.txt").write_text("prices and opening hours, not a picture")
    await page.set_input_files("#upload-folder", str(folder))
    status = page.locator("#upload-status")
    await status.filter(has_text="Done").wait_for()
    assert await status.inner_text() == "Done: 3 of 3 files sent · 2 added · 0 duplicates · 1 not added.", \
        await status.inner_text()
    bar = await page.eval_on_selector("#upload-bar", "(b) => [b.value, b.max]")
    assert bar == [3, 3], bar
    rejected = await page.locator("#rejected li").all_text_contents()  # in a closed <details>
    assert len(rejected) == 1 and rejected[0].startswith("portfolio/notes.txt: ") and "image" in rejected[0], rejected

    # Both pictures, as thumbnails that really load (the signed blob links); the grid's paging is
    # tested in test_web_collections_folder.py.
    thumbs = page.locator("#images .image-card img")
    await page.wait_for_function("() => document.querySelectorAll('#images .image-card img').length === 2")
    for i in range(2):
        await page.wait_for_function(IMAGE_LOADED, arg=await thumbs.nth(i).element_handle())
    titles = await page.locator("#images .card-title").all_inner_texts()
    assert sorted(titles) == ["portfolio/inked/drop.jpg", "portfolio/keep.jpg"], titles
    assert await page.locator(f".collection-button[data-name={NAME}] .collection-count").inner_text() == "2 images"
    await page.locator("#rejected-box summary").click()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "collections.png"), full_page=True)

    # Remove one; focus stays in the grid (on the other picture's button).
    ids = await page.evaluate(CARD_IDS)
    kept_id, dropped_id = (ids if titles[0].endswith("keep.jpg") else ids[::-1])
    await page.locator(f".image-card[data-id='{dropped_id}'] .remove-image").click()
    await page.wait_for_function("() => document.querySelectorAll('#images .image-card').length === 1")
    assert await page.evaluate(CARD_IDS) == [kept_id]
    assert await page.evaluate("() => document.activeElement.closest('.image-card')?.dataset.id") == kept_id
    assert await page.locator("#images-summary").inner_text() == "1 picture."
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gallery_stack.url}/collections/{NAME}/images") as resp:
            assert [i["id"] for i in (await resp.json())["images"]] == [kept_id]

    # Search with only this collection ticked: the kept picture comes first, the removed one never.
    await page.click("#view-search")
    picker = page.locator("#collections-field")
    await picker.wait_for()
    assert await page.locator("#collections-picker label").all_inner_texts() == ["web", NAME]
    await page.click("#collections-picker label:text-is('web')")
    await page.click("label[for=sources-gallery]")
    await page.set_input_files("#file", files=[{"name": "query.jpg", "mimeType": "image/jpeg", "buffer": keep}])
    await page.click("#search")
    await page.locator("#counts", has_text="Done").wait_for()
    results = await page.evaluate(RESULT_IDS)
    assert results and results[0] == kept_id and dropped_id not in results, results
    asked = parse_qs(urlsplit(searches[-1]).query)
    assert asked["collections"] == [NAME] and asked["sources"] == ["gallery"], searches[-1]

    # Nothing ticked: said in words, nothing sent.
    await page.click(f"#collections-picker label:text-is('{NAME}')")
    await page.click("#search")
    await page.locator("#error", has_text="Tick at least one collection").wait_for()
    assert len(searches) == 1

    # On a phone-sized screen the view fits without sideways scrolling.
    await page.click("#view-collections")
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

    # Deleting asks first; "Keep it" keeps it, focus back on the button.
    await page.click("#delete-collection")
    confirm = page.locator("#confirm-delete")
    await confirm.wait_for()
    assert await page.locator("#confirm-text").inner_text() == \
        f"Delete “{NAME}” and its 1 image? This cannot be undone."
    assert await page.evaluate("() => document.activeElement.id") == "confirm-no"
    await page.keyboard.press("Enter")
    assert await confirm.is_hidden()
    assert await page.evaluate("() => document.activeElement.id") == "delete-collection"
    await page.click("#delete-collection")
    await page.click("#confirm-yes")
    await page.locator("#collections-status", has_text=f"Deleted “{NAME}”.").wait_for()
    assert await page.locator(".collection-button").count() == 0
    assert await page.locator("#collection-panel").is_hidden()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gallery_stack.url}/collections") as resp:
            assert [c["name"] for c in (await resp.json())["collections"]] == ["web"]
    assert problems == [], problems

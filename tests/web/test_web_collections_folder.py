"""Adding pictures to a collection on the search page, the ways a person does, in headless
Chromium against the real services on loopback: a whole folder (nested, with a file that
is not a picture and hidden files) through the folder picker, files dropped on the upload
zone, and a collection larger than one page of the grid ("Show more").
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.images import encode, jpeg, noise_image
from tests.support.web_support import CARD_IDS, _open_page
from tests.web.conftest import WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

STATUS = "#upload-status"
# The relative paths the folder input offered, read before the page's own listener empties it.
RECORD_PICKED = """() => document.addEventListener("change", (event) => {
  if (event.target.id === "upload-folder") window.picked = [...event.target.files].map((f) => f.webkitRelativePath);
}, true)"""
# A drop as a browser delivers it: dragenter, dragover, drop, one DataTransfer. Its files are
# built here from bytes sent by the test; the events' default (open the file) must be prevented.
DROP = """async (files) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, { type: f.type }));
  }
  const zone = document.getElementById("upload-zone");
  const fire = (type) => zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
  const entered = fire("dragenter") === false && fire("dragover") === false;
  const dragging = zone.classList.contains("dragging");
  const dropped = fire("drop") === false;
  return { entered, dragging, dropped, dragged: zone.classList.contains("dragging"),
           entries: [...transfer.items].map((item) => item.webkitGetAsEntry()) };
}"""


async def _create_and_open(page: Any, name: str) -> None:
    await page.locator("#views").wait_for()
    await page.click("#view-collections")
    await page.fill("#new-name", name)
    await page.click("#create")
    await page.locator("#collection-heading", has_text=name).wait_for()


async def _listed(stack: WebStack, name: str) -> list[dict[str, Any]]:
    """Every picture of the collection, by the API (one page of up to 1,000, in id order)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/collections/{name}/images", params={"limit": "1000"}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    assert body["next"] is None, body
    images: list[dict[str, Any]] = body["images"]
    return images


async def _done(page: Any) -> str:
    status = page.locator(STATUS)
    await status.filter(has_text="Done").wait_for()
    text: str = await status.inner_text()
    return text


async def test_a_nested_folder_through_the_folder_picker(browser: Any, gallery_stack: WebStack, tmp_path: Path) -> None:
    page, problems = await _open_page(browser, gallery_stack)
    await _create_and_open(page, "shop")
    folder = tmp_path / "shop"
    (folder / "flash" / "2024" / "march").mkdir(parents=True)
    (folder / "copies").mkdir()
    (folder / ".thumbs").mkdir()
    cover = jpeg(31, (300, 240))
    (folder / "cover.jpg").write_bytes(cover)
    (folder / "copies" / "cover-again.jpg").write_bytes(cover)  # the same picture: kept once
    (folder / "flash" / "rose.png").write_bytes(encode(noise_image(32, (260, 260)), "PNG"))
    (folder / "flash" / "2024" / "march" / "dagger.jpg").write_bytes(jpeg(33, (240, 320)))
    (folder / "flash" / "2024" / "march" / "prices.txt").write_text("small 80, large 200: not a picture")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    (folder / ".thumbs" / "cover-small.jpg").write_bytes(jpeg(34, (64, 64)))
    await page.evaluate(RECORD_PICKED)

    await page.set_input_files("#upload-folder", str(folder))
    said = await _done(page)

    # The input really offered the whole tree, hidden files included; the page sent the rest.
    picked = sorted(await page.evaluate("() => window.picked"))
    assert picked == sorted(f"shop/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()), picked
    assert said == ("Done: 5 of 5 files sent · 3 added · 1 duplicate · 1 not added · 2 hidden files skipped."), said
    assert await page.eval_on_selector("#upload-bar", "(b) => [b.value, b.max]") == [5, 5]
    assert await page.locator("#rejected-count").inner_text() == "1 file"
    rejected = await page.locator("#rejected li").all_text_contents()
    assert len(rejected) == 1 and rejected[0].startswith("shop/flash/2024/march/prices.txt: "), rejected
    assert "image" in rejected[0].split(": ", 1)[1], rejected  # the server's reason, not an empty "not added"

    # Every picture arrived under its path in the folder (one of the two copies of the cover).
    names = sorted(i["filename"] for i in await _listed(gallery_stack, "shop"))
    assert len(names) == 3 and names[1:] == ["shop/flash/2024/march/dagger.jpg", "shop/flash/rose.png"] \
        and names[0] in ("shop/copies/cover-again.jpg", "shop/cover.jpg"), names
    await page.wait_for_function("() => document.querySelectorAll('#images .image-card').length === 3")
    assert sorted(await page.locator("#images .card-title").all_inner_texts()) == names
    assert await page.locator("#images-summary").inner_text() == "3 pictures."
    assert await page.locator(".collection-button[data-name=shop] .collection-count").inner_text() == "3 images"
    assert problems == [], problems


async def test_files_dropped_on_the_upload_zone(browser: Any, gallery_stack: WebStack) -> None:
    page, problems = await _open_page(browser, gallery_stack)
    await _create_and_open(page, "dropped")
    files = [("anchor.jpg", "image/jpeg", jpeg(41, (280, 280))),
             ("swallow.png", "image/png", encode(noise_image(42, (300, 200)), "PNG")),
             ("invoice.pdf", "application/pdf", b"%PDF-1.4 not a picture\n"),
             (".DS_Store", "application/octet-stream", bytes(32))]
    dropped = await page.evaluate(DROP, [{"name": n, "type": t, "b64": base64.b64encode(b).decode()} for n, t, b in files])

    # The zone takes the drag (highlighted, default prevented: the browser does not open the file).
    assert dropped["entered"] and dropped["dragging"] and dropped["dropped"] and not dropped["dragged"], dropped
    # Why this drop is files only: Chromium gives no FileSystemEntry to the files of a script-built
    # DataTransfer, and a page cannot make a directory entry at all, so the folder-walking branch
    # (webkitGetAsEntry + readEntries) runs only for a person's real drop. Here the drop handler
    # takes each item's file as it is; the folder picker test covers paths within a folder.
    assert dropped["entries"] == [None] * len(files), dropped
    said = await _done(page)
    assert said == "Done: 3 of 3 files sent · 2 added · 0 duplicates · 1 not added · 1 hidden file skipped.", said
    rejected = await page.locator("#rejected li").all_text_contents()
    assert len(rejected) == 1 and rejected[0].startswith("invoice.pdf: ") and "image" in rejected[0], rejected
    assert sorted(i["filename"] for i in await _listed(gallery_stack, "dropped")) == ["anchor.jpg", "swallow.png"]
    await page.wait_for_function("() => document.querySelectorAll('#images .image-card').length === 2")
    assert await page.locator("#images-summary").inner_text() == "2 pictures."
    assert problems == [], problems


async def test_the_grid_pages_with_show_more(browser: Any, gallery_stack: WebStack) -> None:
    page, problems = await _open_page(browser, gallery_stack)
    await _create_and_open(page, "archive")
    await page.set_input_files("#upload-files", files=[
        {"name": f"flash-{i}.jpg", "mimeType": "image/jpeg", "buffer": jpeg(50 + i, (200, 200))} for i in range(5)])
    await _done(page)
    every = [i["id"] for i in await _listed(gallery_stack, "archive")]
    assert len(every) == 5
    # Pages of two from now on (the grid's data-page-size), from the first page again.
    await page.eval_on_selector("#images", "(grid) => { grid.dataset.pageSize = '2'; }")
    await page.click(".collection-button[data-name=archive]")
    summary, more = page.locator("#images-summary"), page.locator("#images-more")
    await summary.filter(has_text="(2 shown)").wait_for()
    assert await summary.inner_text() == "5 pictures (2 shown)."
    assert await page.evaluate(CARD_IDS) == every[:2]  # the API's order

    # Two clicks in one go fetch one page, not the same page twice.
    await page.eval_on_selector("#images-more", "(b) => { b.click(); b.click(); }")
    await summary.filter(has_text="(4 shown)").wait_for()
    await page.wait_for_function("() => !document.getElementById('images-more').disabled")
    assert await page.evaluate(CARD_IDS) == every[:4]

    # Removing a shown picture: its card goes, the count drops, the next page still follows on.
    await page.locator(f".image-card[data-id='{every[1]}'] .remove-image").click()
    await summary.filter(has_text="4 pictures (3 shown).").wait_for()
    assert await page.locator(".collection-button[data-name=archive] .collection-count").inner_text() == "4 images"
    await more.click()
    await summary.filter(has_text="4 pictures.").wait_for()
    assert await page.evaluate(CARD_IDS) == [every[0], *every[2:]]
    assert await more.is_hidden()  # the last page: nothing more to show
    assert await page.evaluate("() => document.activeElement.closest('.image-card')?.dataset.id") == every[4]

    # An upload lists the grid again from its first page: the new picture is counted, no card twice.
    await page.set_input_files("#upload-files", files=[
        {"name": "late.jpg", "mimeType": "image/jpeg", "buffer": jpeg(60, (200, 200))}])
    await _done(page)
    now = [i["id"] for i in await _listed(gallery_stack, "archive")]
    assert len(now) == 5
    await summary.filter(has_text="5 pictures (2 shown).").wait_for()
    assert await page.evaluate(CARD_IDS) == now[:2]

    # Every shown picture removed: the next page comes on its own, not an empty grid with a button.
    for gone in now[:2]:
        await page.locator(f".image-card[data-id='{gone}'] .remove-image").click()
    await summary.filter(has_text="3 pictures (2 shown).").wait_for()
    assert await page.evaluate(CARD_IDS) == now[2:4]
    await more.click()
    await summary.filter(has_text="3 pictures.").wait_for()
    assert await page.evaluate(CARD_IDS) == now[2:] == [i["id"] for i in await _listed(gallery_stack, "archive")]
    assert await more.is_hidden()
    assert problems == [], problems

"""Marks and Refine on the search page (issue 22) in headless Chromium, against the three
real services on loopback and the embedded gallery in a tmp folder: thumbs up / down
toggle (aria-pressed), Refine sends the marked ids as positive / negative, the marked
results leave the grid and stay in the Marked strip, where they can be undone; marks are
stored with POST /feedback (and an undone one deleted), and a server that keeps none
(GATEWAY_FEEDBACK=off) is said once while the marks go on refining.

Writes docs/screenshots/refine.png with UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import run_gateway, scraper_server
from tests.support.web_support import CARDS, SCREENSHOTS, _open_page, _pick, _search, _wait_thumbnails, _written
from tests.web.conftest import DesignSite, WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

QUERY = "blackwork-mandala-0"
STRIP = ("() => [...document.querySelectorAll('#marked .marked-item')]"
         ".map((i) => [i.dataset.id, i.classList.contains('is-relevant')])")
STRIP_LOADED = "() => [...document.querySelectorAll('#marked img')].every((i) => i.complete && i.naturalWidth > 0)"


def _card(page: Any, result_id: str) -> Any:
    return page.locator(f'#results .card[data-id="{result_id}"]')


async def _pressed(page: Any, result_id: str) -> tuple[str | None, str | None]:
    card = _card(page, result_id)
    return (await card.locator("button.mark-up").get_attribute("aria-pressed"),
            await card.locator("button.mark-down").get_attribute("aria-pressed"))


async def _gallery_results(page: Any, stack: WebStack) -> list[str]:
    """A web search (which fills the gallery), then the same picture in the gallery alone: its ids."""
    await _pick(page, "sources-web")
    await page.set_input_files("#file", str(stack.site.image(QUERY)))
    await _search(page)
    await _written(stack, await page.locator("#results .card").count())
    await _pick(page, "sources-gallery")
    await _search(page)
    ids = [i for _, i in await page.evaluate(CARDS)]
    assert len(ids) >= 6 and all(ids), ids
    return ids


def _searches(page: Any) -> list[dict[str, list[str]]]:
    """The query strings of the page's /search/stream calls, as they are sent."""
    sent: list[dict[str, list[str]]] = []
    page.on("request", lambda r: sent.append(parse_qs(urlsplit(r.url).query))
            if urlsplit(r.url).path == "/search/stream" else None)
    return sent


async def test_marks_toggle_refine_leaves_them_out_and_the_strip_keeps_them(browser: Any, gallery_stack: WebStack) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, viewport={"width": 1280, "height": 900})
    ids = await _gallery_results(page, stack)
    assert await page.locator("#refine-panel").is_visible()
    assert await page.locator("#refine").is_disabled()  # nothing marked yet
    assert await page.locator("#results .card button.mark-up").count() == len(ids)

    # Thumbs up on the first, down on the fourth (the second was taken down from its site):
    # pressed, announced (aria-pressed), in words.
    await _card(page, ids[0]).locator("button.mark-up").click()
    assert await _pressed(page, ids[0]) == ("true", "false")
    assert await _card(page, ids[0]).locator(".mark-label").inner_text() == "Relevant"
    await _card(page, ids[3]).locator("button.mark-down").click()
    assert await _pressed(page, ids[3]) == ("false", "true")
    # Pressing again undoes; up then down switches.
    third = _card(page, ids[2])
    await third.locator("button.mark-up").click()
    await third.locator("button.mark-up").click()
    assert await _pressed(page, ids[2]) == ("false", "false")
    await third.locator("button.mark-up").click()
    await third.locator("button.mark-down").click()
    assert await _pressed(page, ids[2]) == ("false", "true")
    assert await page.evaluate(STRIP) == [[ids[0], True], [ids[3], False], [ids[2], False]]
    # Undo in the strip: the card's buttons are released too.
    await page.locator(f'#marked .marked-item[data-id="{ids[2]}"] button.undo-mark').click()
    assert await _pressed(page, ids[2]) == ("false", "false")
    assert await page.evaluate(STRIP) == [[ids[0], True], [ids[3], False]]
    assert await page.locator("#marks-count").inner_text() == "1 relevant, 1 not relevant"

    # Refine: the same query (picture, model, sources) with the marked ids; they do not come back.
    sent = _searches(page)
    await _search(page, "#refine")
    assert sent[-1]["positive"] == [ids[0]] and sent[-1]["negative"] == [ids[3]], sent
    assert sent[-1]["sources"] == ["gallery"] and sent[-1]["embedding_model"] == ["clip"], sent
    refined = [i for _, i in await page.evaluate(CARDS)]
    assert refined and ids[0] not in refined and ids[3] not in refined, (ids, refined)
    assert await page.evaluate(STRIP) == [[ids[0], True], [ids[3], False]]  # still shown, with their undo
    assert "Steered by your marks: 1 relevant, 1 not relevant" in await page.locator("#results-summary").inner_text()

    # A mark on a refined result (one whose picture loads) joins the strip; the picture shows marks and strip.
    await _wait_thumbnails(page)
    broken = await page.evaluate("() => [...document.querySelectorAll('#results .card.broken')].map((c) => c.dataset.id)")
    liked = next(i for i in refined if i not in broken)
    await _card(page, liked).locator("button.mark-up").click()
    assert await _pressed(page, liked) == ("true", "false")
    assert len(await page.evaluate(STRIP)) == 3
    await page.wait_for_function(STRIP_LOADED)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.locator("#results-panel").screenshot(path=str(SCREENSHOTS / "refine.png"))

    # Undo the first mark and refine again: only the marks kept are sent.
    await page.locator(f'#marked .marked-item[data-id="{ids[0]}"] button.undo-mark').click()
    await _search(page, "#refine")
    assert sent[-1]["positive"] == [liked] and sent[-1]["negative"] == [ids[3]], sent
    again = [i for _, i in await page.evaluate(CARDS)]
    assert liked not in again and ids[3] not in again, again

    # A new search (not Refine) starts without marks.
    await _search(page)
    assert "positive" not in sent[-1] and "negative" not in sent[-1], sent
    assert await page.evaluate(STRIP) == [] and await page.locator("#refine").is_disabled()
    assert not problems, problems


async def _stored(stack: WebStack, expected: dict[str, bool]) -> list[dict[str, Any]]:
    """Waits until GET /feedback holds exactly these marks (result id -> relevant); they are sent in the background."""
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(f"{stack.url}/feedback") as resp:
                assert resp.status == 200, await resp.text()
                marks = (await resp.json())["marks"]
            if {m["result"]: m["relevant"] for m in marks} == expected and len(marks) == len(expected):
                return marks
            await asyncio.sleep(0.05)
    raise AssertionError(f"the server holds {marks}, not {expected}")


async def test_marks_are_stored_with_the_query_ref_and_undone_on_the_server(
        browser: Any, gallery_stack: WebStack) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, viewport={"width": 1280, "height": 900})
    ids = await _gallery_results(page, stack)
    await _card(page, ids[0]).locator("button.mark-up").click()
    await _card(page, ids[1]).locator("button.mark-down").click()
    await _stored(stack, {ids[0]: True, ids[1]: False})
    # Switched and undone marks: the server's copy follows (the old one deleted).
    await _card(page, ids[1]).locator("button.mark-up").click()
    await _stored(stack, {ids[0]: True, ids[1]: True})
    await _card(page, ids[0]).locator("button.mark-up").click()
    await _stored(stack, {ids[1]: True})
    assert await page.locator("#feedback-note").inner_text() == ""  # nothing to say: they were kept
    assert not problems, problems


async def test_a_server_without_feedback_is_said_once_and_marks_still_refine(
        browser: Any, embed: BackgroundServer, design_site: DesignSite, tmp_path: Path) -> None:
    with scraper_server(design_site.manifest) as scraper:
        settings = gateway_settings(embed.target, scraper.target, design_site,  # type: ignore[arg-type]
                                    gallery="on", gallery_path=tmp_path / "gallery", blobs_path=tmp_path / "blobs",
                                    feedback="off")
        async with run_gateway(settings) as gateway:
            stack = WebStack(gateway, design_site, scraper)
            page, problems = await _open_page(browser, stack, viewport={"width": 1280, "height": 900})
            ids = await _gallery_results(page, stack)
            refused: list[int] = []
            page.on("response", lambda r: refused.append(r.status) if urlsplit(r.url).path == "/feedback" else None)
            await _card(page, ids[0]).locator("button.mark-up").click()
            note = page.locator("#feedback-note")
            await note.filter(has_text="This server does not keep marks").wait_for()
            await _card(page, ids[1]).locator("button.mark-down").click()
            assert refused == [404]  # asked once; after that the page keeps marks to itself
            assert await page.evaluate(STRIP) == [[ids[0], True], [ids[1], False]]
            sent = _searches(page)
            await _search(page, "#refine")
            assert sent[-1]["positive"] == [ids[0]] and sent[-1]["negative"] == [ids[1]], sent
            refined = [i for _, i in await page.evaluate(CARDS)]
            assert ids[0] not in refined and ids[1] not in refined, refined
            assert not problems, problems


KEY_A, KEY_B = "alice:key-a-7f3a91", "bob:key-b-41c0d2"


async def test_marks_made_through_the_page_are_the_callers_tenant_only(
        browser: Any, embed: BackgroundServer, design_site: DesignSite, tmp_path: Path) -> None:
    """With API keys: the marks go with the page's key (its thumbnails in the strip too), and
    another tenant neither lists nor deletes them."""
    with scraper_server(design_site.manifest) as scraper:
        settings = gateway_settings(embed.target, scraper.target, design_site,  # type: ignore[arg-type]
                                    gallery="on", gallery_path=tmp_path / "gallery", blobs_path=tmp_path / "blobs",
                                    api_keys=(KEY_A, KEY_B))
        async with run_gateway(settings) as gateway:
            stack = WebStack(gateway, design_site, scraper)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.add_init_script(f"sessionStorage.setItem('tattoo-search.api-key', {KEY_A.split(':')[1]!r})")
            page.set_default_timeout(20_000)
            await page.goto(f"{stack.url}/")
            await page.locator("#search-form[data-gallery]").wait_for(state="attached")
            ids = await _gallery_results(page, stack)
            await _card(page, ids[0]).locator("button.mark-up").click()
            await _card(page, ids[3]).locator("button.mark-down").click()
            strip = page.locator("#marked img").first
            await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=await strip.element_handle())
            assert (await strip.get_attribute("src") or "").startswith("blob:")  # fetched with the key

            async with aiohttp.ClientSession() as http:
                async def marks(key: str) -> list[dict[str, Any]]:
                    async with http.get(f"{stack.url}/feedback", headers={"X-API-Key": key}) as resp:
                        assert resp.status == 200, await resp.text()
                        return list((await resp.json())["marks"])

                for _ in range(200):
                    alice = await marks(KEY_A.split(":")[1])
                    if len(alice) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert {m["result"]: m["relevant"] for m in alice} == {ids[0]: True, ids[3]: False}, alice
                assert await marks(KEY_B.split(":")[1]) == []
                async with http.delete(f"{stack.url}/feedback/{alice[0]['id']}",
                                       headers={"X-API-Key": KEY_B.split(":")[1]}) as resp:
                    assert resp.status == 404
                assert len(await marks(KEY_A.split(":")[1])) == 2
            await page.close()

"""The colour-scheme chips, the main-colour picker and the body-placement chips (issue 22)
in headless Chromium, against the three real services on loopback and the embedded
gallery in a tmp folder: the choices come from /openapi.json, each sends its parameter,
the page shows what the API answers for the same parameters, the reply's notes are
shown, and a control is hidden when the server does not declare its parameter.

Writes docs/screenshots/filters.png with UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.web_support import CARDS, SCREENSHOTS, _open_page, _pick, _search, _wait_thumbnails, _written
from tests.web.conftest import WebStack

# Slow: a real browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

QUERY = "blackwork-mandala-0"
PLACEMENTS = ["forearm", "upper_arm", "sleeve", "hand", "finger", "back", "chest", "ribs", "stomach", "thigh", "calf",
              "ankle", "foot", "neck", "behind_the_ear", "shoulder"]
FILTERS = ("#color-field", "#palette-field", "#placement-field")


async def _api(stack: WebStack, params: dict[str, str]) -> dict[str, Any]:
    """What POST /search answers for the query picture with these parameters."""
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", stack.site.image(QUERY).read_bytes(), filename="q.png")
        async with http.post(f"{stack.url}/search", data=form, params=params) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer


async def test_filters_send_their_parameters_and_show_the_notes(browser: Any, gallery_stack: WebStack) -> None:
    stack = gallery_stack
    page, problems = await _open_page(browser, stack, viewport={"width": 1280, "height": 900})
    sent: list[dict[str, list[str]]] = []
    page.on("request", lambda r: sent.append(parse_qs(urlsplit(r.url).query))
            if urlsplit(r.url).path == "/search/stream" else None)
    # The web search stores the pictures (their colours and placements computed once, on writing).
    await _pick(page, "sources-web")
    await page.set_input_files("#file", str(stack.site.image(QUERY)))
    await _search(page)
    await _written(stack, await page.locator("#results .card").count())
    await _pick(page, "sources-gallery")

    # The vocabularies, read from the OpenAPI description.
    for field in FILTERS:
        assert await page.locator(field).is_visible(), field
    assert await page.locator("#color-options input").evaluate_all("(all) => all.map((i) => i.value)") == [
        "", "black_and_grey", "colour"]
    assert await page.locator("#color-options label").all_inner_texts() == ["Any", "Black & grey", "Colour"]
    await page.locator("#placement-field summary").click()
    assert await page.locator("#placement input").evaluate_all("(all) => all.map((i) => i.value)") == PLACEMENTS
    assert "behind the ear" in await page.locator("#placement label").all_inner_texts()

    # Black & grey only: sent, and the page shows what the API answers for it.
    await page.click("label[for=color-1]")
    await _search(page)
    assert sent[-1]["color"] == ["black_and_grey"] and "palette" not in sent[-1] and "placement" not in sent[-1], sent
    expected = await _api(stack, {"sources": "gallery", "color": "black_and_grey", "embedding_model": "clip"})
    assert expected["results"] and all(r["color_scheme"] == "black_and_grey" for r in expected["results"])
    assert [i for _, i in await page.evaluate(CARDS)] == [r["id"] for r in expected["results"]]
    assert await page.locator("#results .card .looks", has_text="Black & grey").count() == len(expected["results"])

    # Colour and a main colour: sent; every card says its scheme and shows its main colours.
    await page.click("label[for=color-2]")
    await page.locator("#palette").fill("#2e7d32")
    assert await page.locator("#palette-value").inner_text() == "#2e7d32"
    await _search(page)
    assert sent[-1]["color"] == ["colour"] and sent[-1]["palette"] == ["#2e7d32"], sent
    expected = await _api(stack, {"sources": "gallery", "color": "colour", "palette": "#2e7d32", "embedding_model": "clip"})
    assert expected["results"] and [i for _, i in await page.evaluate(CARDS)] == [r["id"] for r in expected["results"]]
    assert await page.locator("#results .card .looks .swatch").count() >= len(expected["results"])
    await _wait_thumbnails(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "filters.png"), full_page=True)

    # Two placements (any of them), with the colour filters.
    await page.locator("#placement label", has_text="forearm").click()
    await page.locator("#placement label", has_text="sleeve").click()
    assert await page.locator("#placement-count").inner_text() == "(2 picked)"
    await _search(page)
    assert sent[-1]["placement"] == ["forearm,sleeve"] and sent[-1]["color"] == ["colour"], sent

    # A model without a text tower places nothing: the reply's notes say so, on the page.
    await page.select_option("#model", "dinov2")
    await _search(page)
    assert sent[-1]["embedding_model"] == ["dinov2"], sent
    expected = await _api(stack, {"sources": "gallery", "placement": "forearm,sleeve", "color": "colour",
                                  "palette": "#2e7d32", "embedding_model": "dinov2"})
    assert expected["notes"], expected
    shown = await page.locator("#results-summary .server-note").all_inner_texts()
    assert [n.removeprefix("note").strip() for n in shown] == expected["notes"], shown

    # Cleared: none of them is sent.
    await page.click("#palette-clear")
    await page.click("label[for=color-0]")
    for name in ("forearm", "sleeve"):
        await page.locator("#placement label", has_text=name).click()
    await _search(page)
    assert not {"color", "palette", "placement"} & set(sent[-1]), sent
    assert not problems, problems


async def test_filters_hide_when_the_server_does_not_declare_them(browser: Any, gallery_stack: WebStack) -> None:
    page, problems = await _open_page(browser, gallery_stack)
    await page.route("**/openapi.json", lambda route: route.abort())
    await page.reload()
    await page.locator("#search-form[data-gallery=unknown]").wait_for(state="attached")
    for field in FILTERS:
        assert await page.locator(field).is_hidden(), field
    await page.fill("#text", "rose")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(urlsplit(r.url).query) if urlsplit(r.url).path == "/search/stream" else None)
    await _search(page)
    assert sent and not {"color", "palette", "placement"} & set(parse_qs(sent[-1])), sent
    assert not problems, problems

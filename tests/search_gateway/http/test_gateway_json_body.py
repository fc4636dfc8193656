"""The JSON body of POST /search and /search/stream takes every search parameter, in JSON's
own types, and means what the same query parameter means. Real embed and scraper servers,
the embedded gallery store and local blobs in tmp; two tenants with private collections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B, collection_settings
from tests.support.gateway_stack import Site, Stack
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio

Search = Callable[..., Awaitable[tuple[int, Any]]]


@pytest_asyncio.fixture
async def studio(embed: BackgroundServer, scraper: BackgroundServer, site: Site,
                 tmp_path: Path) -> AsyncIterator[tuple[Search, dict[str, str]]]:
    """A gateway where tenant A has 'flash' (one picture, tagged rose) and 'sheet' (one
    untagged picture), and tenant B has 'theirs'; yields a search call and A's image ids."""
    async with aiohttp.ClientSession() as http, run_gateway(collection_settings(embed, scraper, site, tmp_path)) as gw:
        async def upload(headers: dict[str, str], name: str, picture: bytes, tags: str = "") -> str:
            async with http.post(f"{gw.url}/collections", json={"name": name}, headers=headers) as resp:
                assert resp.status == 201
            form = aiohttp.FormData()
            form.add_field("file", picture, filename="p.jpg", content_type="image/jpeg")
            if tags:
                form.add_field("tags", tags)
            async with http.post(f"{gw.url}/collections/{name}/images", data=form, headers=headers) as resp:
                body = await resp.json()
            assert body["results"][0]["status"] == "added", body
            return str(body["results"][0]["id"])

        async def search(body: Any, path: str = "/search", headers: dict[str, str] = A,
                         **params: str) -> tuple[int, Any]:
            async with http.post(f"{gw.url}{path}", json=body, params=params, headers=headers) as resp:
                text = await resp.text()
            if path.endswith("/stream") and resp.status == 200:
                return resp.status, [json.loads(line) for line in text.splitlines() if line]
            return resp.status, json.loads(text)

        ids = {"flash": await upload(A, "flash", jpeg(51, (300, 260)), tags="rose"),
               "sheet": await upload(A, "sheet", jpeg(52, (280, 250))),
               "theirs": await upload(B, "theirs", jpeg(53, (260, 240)))}
        yield search, ids


def _ids(reply: dict[str, Any]) -> list[str]:
    return [r["id"] for r in reply["results"]]


def _ranked(reply: dict[str, Any]) -> list[tuple[str, float]]:
    return [(r["id"], r["score"]) for r in reply["results"]]


MINE = {"text": "rose tattoo", "sources": ["gallery"], "collections": ["flash", "sheet"]}


async def test_collections_and_sources_in_the_body_search_only_the_callers_collection(
        studio: tuple[Search, dict[str, str]]) -> None:
    search, ids = studio
    for collections in (["flash"], "flash", "web,flash", ["web", "flash", "flash"]):
        status, reply = await search({"text": "rose tattoo", "collections": collections, "sources": ["gallery"]})
        assert status == 200, reply
        assert _ids(reply) == [ids["flash"]], (collections, reply)
        assert reply["results"][0]["collection"] == "flash" and reply["results"][0]["source"] == "gallery"
    status, both = await search({"text": "rose tattoo", "collections": "flash,sheet", "sources": "gallery"})
    assert status == 200 and sorted(_ids(both)) == sorted([ids["flash"], ids["sheet"]]), both

    # The stream takes the same body: its gallery event holds the collection's picture only.
    status, events = await search({"text": "rose tattoo", "collections": ["flash"], "sources": ["gallery"]},
                                  path="/search/stream")
    assert status == 200 and events[-1]["event"] == "final", events
    assert [r["id"] for r in events[-1]["results"]] == [ids["flash"]]

    # Another tenant's collection does not exist for A: 404 naming it, from the body as from the query.
    for collections in (["theirs"], "web,theirs"):
        status, reply = await search({"text": "rose tattoo", "collections": collections, "sources": ["gallery"]})
        assert status == 404 and "no collection 'theirs'" in reply["detail"], reply
    status, reply = await search({"text": "rose tattoo", "collections": ["theirs"], "sources": ["gallery"]},
                                 headers=B)
    assert status == 200 and _ids(reply) == [ids["theirs"]], reply

    # A query parameter given as well wins over the body's field.
    status, reply = await search({"text": "rose tattoo", "collections": ["flash"], "sources": ["gallery"]},
                                 collections="sheet")
    assert status == 200 and _ids(reply) == [ids["sheet"]], reply


async def test_tags_min_score_like_and_rerank_in_the_body_act_as_in_the_query(
        studio: tuple[Search, dict[str, str]]) -> None:
    search, ids = studio
    status, everything = await search(MINE)
    assert status == 200 and len(everything["results"]) == 2, everything

    async def same(field: str, value: Any, query: str, base: dict[str, Any] = MINE) -> dict[str, Any]:
        """The body's field and the query parameter give the same answer; that answer."""
        status, by_body = await search({**base, field: value})
        assert status == 200, by_body
        status, by_query = await search(base, **{field: query})
        assert status == 200, by_query
        assert _ranked(by_body) == _ranked(by_query)
        return by_body

    # tags: only the picture uploaded with the tag.
    assert _ids(await same("tags", ["rose"], "rose")) == [ids["flash"]]
    assert _ids(await same("tags", "rose", "rose")) == [ids["flash"]]
    # min_score: a random picture is nowhere near 0.99 to a text; -1 (an integer) keeps all.
    assert _ids(await same("min_score", 0.99, "0.99")) == []
    assert len((await same("min_score", -1, "-1"))["results"]) == 2
    # like: the stored vector of that picture is the query (text not used); the picture itself is left out.
    liked = await same("like", ids["flash"], ids["flash"])
    assert _ids(liked) == [ids["sheet"]], liked
    status, by_like_only = await search({"like": ids["flash"], "sources": ["gallery"], "collections": ["flash", "sheet"]})
    assert status == 200 and _ranked(by_like_only) == _ranked(liked)
    # rerank: needs a query image, so a text or like search with it is refused as with ?rerank=true.
    for base in (MINE, {"like": ids["flash"], "sources": ["gallery"]}):
        status, reply = await search({**base, "rerank": True})
        assert (status, reply["error"]) == (400, "rerank_needs_image"), reply
    assert _ids(await same("rerank", False, "false")) == _ids(everything)
    # rerank_k is range-checked where the query parameter is; 5.0 is the integer 5.
    status, reply = await search({**MINE, "rerank_k": 0})
    assert status == 400 and "'rerank_k' must be between 1" in reply["detail"], reply
    assert _ids(await same("rerank_k", 5.0, "5")) == _ids(everything)
    # max_results and include_patch_attention (no effect on a text search, accepted as in the query).
    assert len((await same("max_results", 1, "1"))["results"]) == 1
    await same("include_patch_attention", True, "true")


# (body, the field named, what the reply says about it)
MISTYPED = [
    ('{"text": "rose", "collections": 5}', "collections", "must be a string (comma-separated) or a list of strings"),
    ('{"text": "rose", "collections": [5]}', "collections", "not a list holding a number"),
    ('{"text": "rose", "collections": {"flash": 1}}', "collections", "not an object"),
    ('{"text": "rose", "collections": ["a,b"]}', "collections", "holds a comma"),
    ('{"text": "rose", "collections": ["\\ud800"]}', "collections", "lone surrogate"),
    ('{"text": "rose", "sources": true}', "sources", "or a list of strings, not a boolean"),
    ('{"text": "rose", "sources": [null]}', "sources", "not a list holding null"),
    ('{"text": "rose", "sources": ["moon"]}', "sources", "takes gallery or web"),
    ('{"text": "rose", "tags": 3}', "tags", "or a list of strings, not a number"),
    ('{"text": "rose", "tags": [["rose"]]}', "tags", "not a list holding a list"),
    ('{"text": "rose", "tags": "\\udfff"}', "tags", "lone surrogate"),
    ('{"text": "rose", "tags": ["unicorn"]}', "unicorn", "Unknown tag"),
    ('{"text": "rose", "min_score": "0.5"}', "min_score", "must be a number, not a string"),
    ('{"text": "rose", "min_score": true}', "min_score", "must be a number, not a boolean"),
    ('{"text": "rose", "min_score": null}', "min_score", "must be a number, not null"),
    ('{"text": "rose", "min_score": NaN}', "min_score", "between -1 and 1"),
    ('{"text": "rose", "min_score": 2}', "min_score", "between -1 and 1"),
    ('{"text": "rose", "rerank": "true"}', "rerank", "must be a boolean (true or false), not a string"),
    ('{"text": "rose", "rerank": 1}', "rerank", "must be a boolean (true or false), not a number"),
    ('{"text": "rose", "rerank_k": 2.5}', "rerank_k", "must be an integer, not a number"),
    ('{"text": "rose", "rerank_k": "3"}', "rerank_k", "must be an integer, not a string"),
    ('{"text": "rose", "rerank_k": 1000}', "rerank_k", "between 1 and"),
    ('{"text": "rose", "like": 5}', "like", "must be a string, not a number"),
    ('{"text": "rose", "like": ["0b6c1f3e-5d1a-5b7e-9a53-2f1d8c9e4a10"]}', "like", "must be a string, not a list"),
    ('{"text": "rose", "like": "not-an-id"}', "like", "gallery image id"),
    ('{"text": "rose", "include_patch_attention": "yes"}', "include_patch_attention", "must be a boolean"),
]


@pytest.mark.parametrize(("body", "named", "says"), MISTYPED, ids=[b[16:56] for b, _, _ in MISTYPED])
@pytest.mark.parametrize("path", ["/search", "/search/stream"])
async def test_a_mistyped_field_gets_400_naming_it_and_the_type(stack: Stack, path: str, body: str, named: str,
                                                                says: str) -> None:
    async with stack.http.post(f"{stack.url}{path}", data=body.encode(),
                               headers={"Content-Type": "application/json"}) as resp:
        reply = await resp.json()
    assert (resp.status, reply["error"]) == (400, "bad_request"), reply
    assert f"'{named}" in reply["detail"] and says in reply["detail"], reply


async def test_an_unknown_field_gets_400_listing_every_field(stack: Stack) -> None:
    async with stack.http.post(f"{stack.url}/search", json={"text": "rose", "query": "rose"}) as resp:
        reply = await resp.json()
    assert (resp.status, reply["error"]) == (400, "bad_request"), reply
    assert "Unknown field 'query'" in reply["detail"]
    for field in ("text", "embedding_model", "max_results", "include_patch_attention", "rerank", "rerank_k",
                  "sources", "min_score", "tags", "like", "collections"):
        assert field in reply["detail"], reply

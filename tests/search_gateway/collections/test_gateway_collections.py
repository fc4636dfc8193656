"""Private collections (issue 13): tenants, the collections API, uploads into the blob
store. Real embed and scraper servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.tenants import parse_api_keys
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import png_with_size, run_gateway
from tests.support.images import encode, jpeg, noise_image

pytestmark = pytest.mark.asyncio



def _files(*items: tuple[str, bytes | str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in items:
        if isinstance(value, bytes):
            form.add_field(name, value, filename=f"{len(value)}.jpg", content_type="image/jpeg")
        else:
            form.add_field(name, value)
    return form


def test_api_keys_name_tenants_and_plain_keys_stay_their_own() -> None:
    keys = parse_api_keys(["studio-a:k1", "studio-a:k2", "plain-key"], secret=b"tenant secret")
    assert keys["k1"] == keys["k2"] == "studio-a"
    assert keys["plain-key"].startswith("key-") and "plain" not in keys["plain-key"]
    with pytest.raises(ConfigError, match="GATEWAY_API_KEYS"):
        GatewaySettings(api_keys=("Bad Tenant:k",))
    # A start-up error names the entry by its position, never by any of its (secret) text.
    with pytest.raises(ValueError, match="entry 2 ") as refused:
        parse_api_keys(["studio-a:k1", "Secr+t:key"], secret=b"tenant secret")
    assert "Secr" not in str(refused.value)


async def test_collections_upload_and_tenants_never_cross(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture, other = jpeg(3, (344, 240)), jpeg(5, (300, 260))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> tuple[int, Any]:
            async with http.request(method, gw.url + path, headers=headers, **kw) as resp:
                return resp.status, (await resp.json() if resp.content_type == "application/json" else None)

        assert (await call("POST", "/collections", A, json={"name": "flash"}))[0] == 201
        assert (await call("POST", "/collections", A, json={"name": "flash"}))[0] == 409
        status, body = await call("POST", "/collections", A, json={"name": "Bad Name!"})
        assert status == 400 and "a-z" in body["detail"]
        assert (await call("POST", "/collections", A, json={"name": "web"}))[0] == 400
        assert (await call("POST", "/collections", B, json={"name": "flash"}))[0] == 201  # same name, other tenant

        status, body = await call("POST", "/collections/flash/images", A, data=_files(
            ("file", picture), ("file", b"not an image at all"), ("file", picture[: len(picture) // 2]),
            ("url", "http://127.0.0.1:1/x.jpg"), ("file", picture), ("url", f"{site.base}/img/5.jpg")))
        assert status == 200, body
        kinds = [r["status"] for r in body["results"]]
        assert kinds == ["added", "rejected", "rejected", "rejected", "duplicate", "added"], body
        added = body["results"][0]["id"]
        assert body["results"][4]["id"] == added
        assert all(r["reason"] for r in body["results"][1:4])
        assert len(list((tmp_path / "blobs").rglob("*"))) >= 2

        status, listed = await call("GET", "/collections", A)
        flash = next(c for c in listed["collections"] if c["name"] == "flash")
        assert flash["images"] == 2 and flash["models"]
        status, image = await call("GET", f"/collections/flash/images/{added}", A)
        assert status == 200 and image["width"] == 344
        async with http.get(gw.url + image["thumbnail"], headers=A) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"

        # Tenant B: the same name is another collection; A's image and thumbnail do not exist for B.
        assert (await call("GET", f"/collections/flash/images/{added}", B))[0] == 404
        async with http.get(gw.url + image["thumbnail"], headers=B) as resp:
            assert resp.status == 404
        _, b_list = await call("GET", "/collections", B)
        assert next(c for c in b_list["collections"] if c["name"] == "flash")["images"] == 0
        assert (await call("DELETE", f"/collections/flash/images/{added}", B))[0] == 404
        status, _ = await call("POST", "/collections/flash/images", B, data=_files(("file", other)))
        assert status == 200

        # Delete: A's points and the blob nobody else holds go; B's collection stays.
        assert (await call("DELETE", f"/collections/flash/images/{added}", A))[0] == 204
        assert (await call("GET", f"/collections/flash/images/{added}", A))[0] == 404
        assert (await call("DELETE", "/collections/flash", A))[0] == 204
        assert (await call("DELETE", "/collections/flash", A))[0] == 404
        _, a_list = await call("GET", "/collections", A)
        assert [c["name"] for c in a_list["collections"]] == ["web"]
        _, b_list = await call("GET", "/collections", B)
        assert next(c for c in b_list["collections"] if c["name"] == "flash")["images"] == 1


async def test_too_many_files_and_too_large_bodies_are_refused_naming_the_limit(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    settings = _settings(embed, scraper, site, tmp_path, collection_max_files=10,
                         collection_max_bytes=4 * 1024 * 1024)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        async with http.post(f"{gw.url}/collections", json={"name": "big"}, headers=A) as resp:
            assert resp.status == 201
        many = _files(*[("file", b"x")] * 1000)
        async with http.post(f"{gw.url}/collections/big/images", data=many, headers=A) as resp:
            body = await resp.json()
            assert resp.status == 413 and "GATEWAY_COLLECTION_MAX_FILES" in body["detail"]
        huge = aiohttp.FormData()
        huge.add_field("file", io.BytesIO(b"\0" * (50 * 1024 * 1024)), filename="huge.jpg")
        async with http.post(f"{gw.url}/collections/big/images", data=huge, headers=A) as resp:
            body = await resp.json()
            assert resp.status == 413 and "GATEWAY_COLLECTION_MAX_BYTES" in body["detail"]
        async with http.get(f"{gw.url}/collections", headers=A) as resp:
            assert resp.status == 200  # still up


async def test_another_tenants_private_image_is_neither_liked_nor_found(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture = jpeg(41, (300, 280))  # not on the site: only A's collection holds it
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async def search(headers: dict[str, str], **params: str) -> tuple[int, Any]:
            data = _files(("file", picture)) if "like" not in params else None
            async with http.post(f"{gw.url}/search", data=data, params=params, headers=headers) as resp:
                return resp.status, await resp.json()

        async with http.post(f"{gw.url}/collections", json={"name": "flash"}, headers=A) as resp:
            assert resp.status == 201
        async with http.post(f"{gw.url}/collections/flash/images", data=_files(("file", picture)), headers=A) as resp:
            added = (await resp.json())["results"][0]["id"]

        status, mine = await search(A, sources="gallery")
        assert status == 200 and mine["results"][0]["id"] == added  # A finds it: the search can
        status, liked = await search(A, like=added, sources="gallery")
        assert status == 200, liked

        status, body = await search(B, like=added, sources="gallery")
        assert status == 404 and "No gallery image" in body["detail"], body
        status, body = await search(B, sources="gallery", max_results="100")
        assert status == 200 and added not in [r["id"] for r in body["results"]]
        assert all(r["collection"] == "web" for r in body["results"]), body


async def test_search_in_a_collection_finds_its_image_first_with_a_thumbnail_for_its_tenant_only(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture = jpeg(42, (310, 270))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async def search(path: str, headers: dict[str, str], **params: str) -> tuple[int, str]:
            async with http.post(f"{gw.url}{path}", data=_files(("file", picture)), params=params,
                                 headers=headers) as resp:
                return resp.status, await resp.text()

        async with http.post(f"{gw.url}/collections", json={"name": "flash"}, headers=A) as resp:
            assert resp.status == 201
        async with http.post(f"{gw.url}/collections/flash/images", data=_files(("file", picture)), headers=A) as resp:
            added = (await resp.json())["results"][0]["id"]

        status, text = await search("/search", A, collections="flash", sources="gallery")
        assert status == 200, text
        best = json.loads(text)["results"][0]
        assert best["id"] == added and best["source"] == "gallery" and best["collection"] == "flash"
        assert best["score"] == pytest.approx(1.0, abs=1e-3)
        async with http.get(gw.url + best["thumbnail_url"], headers=A) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"
        async with http.get(gw.url + best["thumbnail_url"], headers=B) as resp:
            assert resp.status == 404

        # Gallery results only from the collection named; the web still answers (sources not limited).
        status, text = await search("/search/stream", A, collections="flash")
        events = [json.loads(line) for line in text.splitlines() if line]
        assert events[0]["event"] == "gallery" and [r["id"] for r in events[0]["results"]] == [added]
        final = events[-1]
        assert final["event"] == "final" and any(r["source"] == "web" for r in final["results"]), final
        assert all(r["collection"] == "flash" for r in final["results"] if r["source"] == "gallery")

        # Only "web": A's collection is not searched.
        status, text = await search("/search", A, collections="web", sources="gallery")
        assert status == 200 and added not in text

        # Unknown, and another tenant's: 404 naming it, as if nobody had ever made it.
        for headers, names in ((A, "web,nope"), (B, "flash")):
            status, text = await search("/search", headers, collections=names, sources="gallery")
            assert status == 404 and f"no collection {names.split(',')[-1]!r}" in json.loads(text)["detail"]


OPERATIONS = frozenset({"POST /search", "GET /collections", "POST /collections", "DELETE /collections/{name}",
                        "POST /collections/{name}/images", "GET /collections/{name}/images/{id}",
                        "DELETE /collections/{name}/images/{id}"})


def _fuzz_collections(document: dict[str, Any], base_url: str) -> list[str]:
    """The schema fuzzer of test_gateway_openapi_fuzz over the routes that exist only with the
    gallery on; a name that exists already (409) is one more refusal no schema can foresee."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    from tests.support import openapi_fuzz as fuzz

    def valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> None:
        if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
            return
        body = response.json() if response.headers.get("content-type", [""])[0].startswith("application/json") else {}
        error = body.get("error") if isinstance(body, dict) else None
        assert error in fuzz.UNDESCRIBABLE | {"conflict"}, f"a valid request was refused: {response.status_code} {body}"

    checks = [*fuzz.CHECKS[:-1], valid_requests_are_accepted]
    # Both headers, with one key: the fuzzer fills in the security schemes it is given, and a
    # generated Bearer token next to X-API-Key would be two keys (400 ambiguous_api_key).
    headers = {"X-API-Key": "key-a", "Authorization": "Bearer key-a"}
    tested = []
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        assert isinstance(result, Ok), result  # the served description parses
        operation = result.ok()
        if operation.label not in OPERATIONS:
            continue
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=fuzz.EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=30, headers=headers)
            case.validate_response(response, checks=checks)

        run()
        tested.append(operation.label)
    return tested


@pytest.mark.slow
async def test_the_collections_routes_answer_as_their_description_says(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    import asyncio

    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async with http.get(f"{gw.url}/openapi.json", headers=A) as resp:
            document = await resp.json()
        search = document["paths"]["/search"]["post"]["parameters"]
        assert any(p["name"] == "collections" for p in search)
        # A collection and an image exist, so that fuzzed names and ids can meet real ones.
        async with http.post(f"{gw.url}/collections", json={"name": "a"}, headers=A) as resp:
            assert resp.status == 201
        async with http.post(f"{gw.url}/collections/a/images", data=_files(("file", jpeg(43, (64, 64)))),
                             headers=A) as resp:
            assert resp.status == 200
        tested = await asyncio.to_thread(_fuzz_collections, document, gw.url)
        assert set(tested) == OPERATIONS, tested


async def test_a_pixel_bomb_is_rejected_with_its_reason_and_the_rest_is_added(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    bomb = png_with_size(encode(noise_image(5, (64, 64)), "PNG"), 100_000, 100_000)
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async with http.post(f"{gw.url}/collections", json={"name": "flash"}, headers=A) as resp:
            assert resp.status == 201
        form = _files(("file", bomb), ("url", f"{site.base}/bomb.png"), ("file", jpeg(44, (200, 200))))
        async with http.post(f"{gw.url}/collections/flash/images", data=form, headers=A) as resp:
            body = await resp.json()
        assert resp.status == 200, body
        assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "added"], body
        for rejected in body["results"][:2]:
            assert "100000x100000 pixels" in rejected["reason"] and "limit" in rejected["reason"], rejected


async def test_deleting_a_collection_deletes_the_originals_no_other_collection_holds(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    only_here, shared, other_tenant = jpeg(45, (200, 180)), jpeg(46, (210, 180)), jpeg(47, (220, 180))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async def upload(headers: dict[str, str], name: str, *pictures: bytes) -> list[str]:
            async with http.post(f"{gw.url}/collections", json={"name": name}, headers=headers) as resp:
                assert resp.status in (201, 409)
            form = _files(*[("file", p) for p in pictures])
            async with http.post(f"{gw.url}/collections/{name}/images", data=form, headers=headers) as resp:
                results = (await resp.json())["results"]
            assert [r["status"] for r in results] == ["added"] * len(pictures), results
            hashes = []
            for r in results:
                async with http.get(f"{gw.url}/collections/{name}/images/{r['id']}", headers=headers) as resp:
                    hashes.append((await resp.json())["sha256"])
            return hashes

        def stored(sha256: str) -> bool:
            return (tmp_path / "blobs" / sha256[:2] / sha256[2:4] / sha256).is_file()

        gone, kept = await upload(A, "flash", only_here, shared)
        await upload(A, "keep", shared)
        # Another tenant holding the same picture keeps its bytes too.
        (theirs,) = await upload(B, "flash", other_tenant)
        (also_theirs,) = await upload(B, "mine", only_here)
        assert also_theirs == gone and all(map(stored, (gone, kept, theirs)))

        deleter = gw.app.state.collections.deleter

        async def delete(headers: dict[str, str], name: str) -> None:
            async with http.delete(f"{gw.url}/collections/{name}", headers=headers) as resp:
                assert resp.status == 204
            await deleter.settled()  # emptied in the background after the 204

        await delete(B, "mine")
        assert stored(gone)  # A's flash still holds it
        await delete(A, "flash")
        assert not stored(gone), "nothing holds it any more: the bytes go with the collection"
        assert stored(kept) and stored(theirs)
        await delete(A, "keep")
        assert not stored(kept) and stored(theirs)

"""Colour scheme, palette and body placement (issue 22, items 3 and 4): the three real services,
the embedded store in a tmp folder, real images drawn with Pillow and served on loopback
(the web), uploads through the collection routes, and the reindex's backfill of points
written before colour facts existed."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image, ImageDraw

from search_gateway.fetch.colour import colour_facts
from search_gateway.gallery.base import GalleryFilter, GalleryPoint, VectorSpace
from search_gateway.gallery.gallery import Gallery
from search_gateway.search.caption import PLACEMENTS
from search_gateway.search.colour_filter import PALETTE_WEIGHT
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B, CollectionsClient, collection_settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import Hits, RunningGateway, run_gateway, scraper_server, serve_aiohttp, write_catalog

pytestmark = pytest.mark.asyncio

N = 4  # pictures of each scheme on the site
RED, BLUE = (200, 30, 40), (30, 70, 200)


def grey_drawing(i: int) -> bytes:
    """Black line work with grey shading on paper: black and grey."""
    img = Image.new("RGB", (220 + 6 * i, 200), (250, 250, 248))
    draw = ImageDraw.Draw(img)
    for k in range(4):
        v = 70 + 35 * k
        x = 15 + 30 * k + (3 * i) % 40
        draw.ellipse((x, 20 + 20 * k, x + 75, 110 + 20 * k), fill=(v, v, v),
                     outline=(10, 10, 10), width=3)
    draw.line([(0, 190 - 5 * i), (220, 10 + 4 * i)], fill=(15, 15, 15), width=3)
    return _jpeg(img)


def red_and_blue(i: int, red_share: float = 0.5) -> bytes:
    """A red shape and a blue one, outlined in black: colour (red_share of the inked area red)."""
    img = Image.new("RGB", (220 + 6 * i, 200), (250, 250, 248))
    draw = ImageDraw.Draw(img)
    split = int(20 + 180 * red_share)
    draw.rectangle((20, 20, split, 180), fill=RED, outline=(10, 10, 10), width=3)
    draw.rectangle((split, 20, 200, 180), fill=BLUE, outline=(10, 10, 10), width=3)
    draw.line([(0, 5 * i), (220, 200 - 4 * i)], fill=(15, 15, 15), width=3)
    return _jpeg(img)


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


QUERY = grey_drawing(30)


class PictureSite:
    """Grey pictures at /grey/<i>.jpg, red-and-blue ones at /colour/<i>.jpg (red to blue from
    mostly red to mostly blue); /gone/ answers 404 (a dead URL)."""

    def __init__(self) -> None:
        self.hits = Hits()
        self.grey = [grey_drawing(i) for i in range(N)]
        self.colour = [red_and_blue(i, red_share=0.85 - 0.2 * i) for i in range(N)]
        self.port = 0

    def app(self) -> web.Application:
        async def picture(request: web.Request) -> web.Response:
            self.hits.paths.append(request.path)
            kind, n = request.match_info["kind"], int(request.match_info["n"])
            if kind == "gone":
                return web.Response(status=404)
            return web.Response(body=(self.grey if kind == "grey" else self.colour)[n], content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/{kind}/{n}.jpg", picture)
        return app

    def url(self, kind: str, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{n}.jpg"

    def urls(self) -> list[str]:
        return [self.url("grey", i) for i in range(N)] + [self.url("colour", i) for i in range(N)]


@pytest_asyncio.fixture
async def pictures() -> AsyncIterator[PictureSite]:
    found = PictureSite()
    async with serve_aiohttp(found.app()) as port:
        found.port = port
        yield found


def settings(embed: BackgroundServer, scraper: BackgroundServer, pictures: PictureSite, tmp: Path, **more: Any) -> Any:
    site = Site(pictures.port, 0, pictures.hits)  # fetch_allow: the loopback site (the downloader's test switch)
    return collection_settings(embed, scraper, site, tmp, reindex_heartbeat_s=0.2, **more)


async def search(http: aiohttp.ClientSession, gw: RunningGateway, status: int = 200, headers: dict[str, str] = A,
                 **params: str) -> dict[str, Any]:
    form = aiohttp.FormData()  # an image query: dinov2 has no text tower
    form.add_field("file", io.BytesIO(QUERY), filename="query.jpg", content_type="image/jpeg")
    async with http.post(f"{gw.url}/search", params=params, data=form, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return dict(body)


async def gallery_of(gw: RunningGateway) -> Gallery:
    return await gw.app.state.collections.gallery.link.gallery()


async def space_of(gw: RunningGateway, model: str = "clip") -> VectorSpace:
    space = await gw.app.state.collections.gallery.space_for(model)
    assert space is not None
    return space


async def web_points(gw: RunningGateway, model: str = "clip") -> list[GalleryPoint]:
    gallery = await gallery_of(gw)
    page = await gallery.store.scroll(await space_of(gw, model), limit=100, filter=GalleryFilter(collections=("web",)))
    return page.points


async def remembered(http: aiohttp.ClientSession, gw: RunningGateway, model: str = "clip") -> dict[str, Any]:
    """A web search of every picture with ``model``, then the writer drained: all of them are points."""
    body = await search(http, gw, sources="web", embedding_model=model, max_results="50")
    await gw.app.state.collections.gallery.writer.drained()
    return body


async def test_colour_facts_are_stored_at_write_and_filter_web_and_gallery_results(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path)) as gw, aiohttp.ClientSession() as http:
            # Web results of this search are filtered by the colour read from their pixels.
            coloured = await search(http, gw, sources="web", color="colour", max_results="50")
            assert sorted(r["url"] for r in coloured["results"]) == sorted(pictures.url("colour", i) for i in range(N))
            assert all(r["color_scheme"] == "colour" and r["palette"] for r in coloured["results"])
            await gw.app.state.collections.gallery.writer.drained()

            # Every web image was stored with its colour facts, the filtered-out ones too.
            stored = {p.urls[-1]: p for p in await web_points(gw)}
            assert set(stored) == set(pictures.urls())
            for url, point in stored.items():
                assert point.color_scheme == ("colour" if "/colour/" in url else "black_and_grey"), url
                assert point.palette and len(point.palette) == len(point.palette_shares or ())
                assert abs(sum(point.palette_shares or ()) - 1) < 1e-3
            red = stored[pictures.url("colour", 0)].palette or ()
            assert any(colour_is_near(c, RED) for c in red[:3]), red  # mostly red: red among the dominant

            # The gallery filters in the store query.
            grey = await search(http, gw, sources="gallery", color="black_and_grey", max_results="50")
            assert sorted(r["url"] for r in grey["results"]) == sorted(pictures.url("grey", i) for i in range(N))
            everything = await search(http, gw, sources="gallery", max_results="50")
            assert len(everything["results"]) == 2 * N

            # The palette reorders by score + PALETTE_WEIGHT x palette_match; the score stays the cosine.
            by_blue = await search(http, gw, sources="gallery", color="colour", palette="1e46c8", max_results="50")
            results = by_blue["results"]
            keys = [r["score"] + PALETTE_WEIGHT * r["palette_match"] for r in results]
            assert keys == sorted(keys, reverse=True)
            match = {r["url"]: r["palette_match"] for r in results}
            # The bluest picture (the last) is nearer to blue than the reddest (the first).
            assert match[pictures.url("colour", N - 1)] > match[pictures.url("colour", 0)]
            hashed = await search(http, gw, sources="gallery", palette="#1E46C8", max_results="50")
            assert all("palette_match" in r for r in hashed["results"])


def colour_is_near(hex_colour: str, rgb: tuple[int, int, int], tolerance: int = 60) -> bool:
    got = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= tolerance for a, b in zip(got, rgb, strict=True))


async def test_uploads_are_stored_with_their_colour_facts_and_filtered_by_them(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path)) as gw, aiohttp.ClientSession() as http:
            client = CollectionsClient(http, gw)
            assert (await client.call("POST", "/collections", json={"name": "flash"}))[0] == 201
            grey_id, colour_id = await client.added("flash", [grey_drawing(9), red_and_blue(9)], "clip")
            for scheme, expected in (("black_and_grey", grey_id), ("colour", colour_id)):
                body = await search(http, gw, sources="gallery", collections="flash", color=scheme)
                assert [r["id"] for r in body["results"]] == [expected]
                assert body["results"][0]["color_scheme"] == scheme and body["results"][0]["palette"]
            # Another tenant's colour search never meets them (its own collections only, and web).
            other = await search(http, gw, headers=B, sources="gallery", color="colour", max_results="50")
            assert {grey_id, colour_id}.isdisjoint(r["id"] for r in other["results"])
            # Placement is scored for uploads too (clip has a text tower).
            body = await search(http, gw, sources="gallery", collections="flash")
            assert all(r["placement"] and set(r["placement"]) <= set(PLACEMENTS) for r in body["results"])


async def test_placement_is_stored_for_a_text_tower_model_and_noted_absent_for_others(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path)) as gw, aiohttp.ClientSession() as http:
            await remembered(http, gw, "clip")
            points = await web_points(gw, "clip")
            assert points and all(1 <= len(p.placement) <= 3 and set(p.placement) <= set(PLACEMENTS) for p in points)
            # ANY of the names asked: a point tagged with one of them is kept.
            name = next(iter(points[0].placement))
            other = next(p for p in PLACEMENTS if p != name)
            body = await search(http, gw, sources="gallery", placement=f"{name},{other}", max_results="50")
            expected = sorted(p.urls[-1] for p in points if {name, other} & set(p.placement))
            assert sorted(r["url"] for r in body["results"]) == expected
            assert all({name, other} & set(r["placement"]) for r in body["results"])
            assert "notes" not in body  # gallery only, clip: nothing to explain

            # dinov2 has no text tower: its points have no placement, and the reply says why.
            await remembered(http, gw, "dinov2")
            assert all(not p.placement for p in await web_points(gw, "dinov2"))
            none = await search(http, gw, 200, sources="gallery", placement="forearm", embedding_model="dinov2")
            assert none["results"] == []
            assert any("dinov2 has no text tower" in note for note in none["notes"])


async def test_unknown_colour_palette_and_placement_are_refused_with_the_valid_values(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path)) as gw, aiohttp.ClientSession() as http:
            bad = await search(http, gw, 400, color="red")
            assert "black_and_grey or colour" in bad["detail"]
            bad = await search(http, gw, 400, palette="red")
            assert "#rrggbb" in bad["detail"]
            bad = await search(http, gw, 400, placement="forearm,elbow")
            assert "'elbow'" in bad["detail"] and "behind_the_ear" in bad["detail"]
            async with http.get(f"{gw.url}/openapi.json", headers=A) as resp:
                described = {p["name"] for p in (await resp.json())["paths"]["/search"]["post"]["parameters"]}
            assert {"color", "palette", "placement"} <= described


async def _job(client: CollectionsClient, path: str, name: str | None = None) -> dict[str, Any]:
    if name is None:  # the web job
        status, body = await client.call("GET", path)
        assert status == 200, body
        return dict(body)
    return dict((await client.collection(name))["index"]["clip"])


async def _until(client: CollectionsClient, path: str, name: str | None, done: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await _job(client, path, name)
        if done(job) or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.005)


async def _forget_colour(gw: RunningGateway, points: list[GalleryPoint], space: VectorSpace) -> None:
    """The points as a gateway before colour facts wrote them (and placement, for uploads)."""
    gallery = await gallery_of(gw)
    full = await gallery.store.retrieve(space, [p.id for p in points])
    await gallery.store.upsert(space, [replace(p, color_scheme=None, palette=None, palette_shares=None,
                                               color_error=None, placement={}) for p in full])


async def test_reindex_fills_in_colour_of_private_points_written_without_it_and_resumes(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    many = [grey_drawing(20 + i) if i % 2 else red_and_blue(20 + i) for i in range(12)]
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path, embed_batch=1)) as gw, \
                aiohttp.ClientSession() as http:
            client = CollectionsClient(http, gw)
            assert (await client.call("POST", "/collections", json={"name": "old"}))[0] == 201
            await client.added("old", many, "clip")
            space = await space_of(gw)
            gallery = await gallery_of(gw)
            private = GalleryFilter(collections=("old",), tenant="studio-a")
            points = (await gallery.store.scroll(space, limit=100, filter=private)).points
            await _forget_colour(gw, points, space)
            assert (await search(http, gw, sources="gallery", collections="old", color="colour"))["results"] == []

            # Started, stopped half way (the gateway's jobs cancelled, as at a shutdown) ...
            status, _ = await client.call("POST", "/collections/old/reindex", params={"embedding_model": "clip"})
            assert status == 202
            half = await _until(client, "", "old", lambda j: j.get("done", 0) >= 4)
            await gw.app.state.collections.reindex.close()
            assert 0 < half["done"] < len(many), half
            coloured = [p for p in (await gallery.store.scroll(space, limit=100, filter=private)).points
                        if p.color_scheme is not None]
            assert 0 < len(coloured) < len(many)
            kept = {p.id: p.last_seen for p in coloured}

            # ... and asked again once its record reads interrupted: only what is left is written.
            await _until(client, "", "old", lambda j: j["state"] == "interrupted")
            status, _ = await client.call("POST", "/collections/old/reindex", params={"embedding_model": "clip"})
            assert status == 202
            final = await _until(client, "", "old", lambda j: j["state"] == "indexed")
            assert final["state"] == "indexed", final
            after = {p.id: p for p in (await gallery.store.scroll(space, limit=100, filter=private)).points}
            assert all(p.color_scheme is not None and p.palette and p.placement for p in after.values())
            assert all(after[i].last_seen == seen for i, seen in kept.items())  # not written again
            body = await search(http, gw, sources="gallery", collections="old", color="colour", max_results="50")
            assert len(body["results"]) == 6


async def test_reindex_of_web_downloads_points_again_for_their_colour_and_counts_dead_urls(
        embed: BackgroundServer, pictures: PictureSite, tmp_path: Path) -> None:
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", pictures.urls())) as scraper:
        async with run_gateway(settings(embed, scraper, pictures, tmp_path)) as gw, aiohttp.ClientSession() as http:
            client = CollectionsClient(http, gw)
            await remembered(http, gw)
            space = await space_of(gw)
            points = await web_points(gw)
            await _forget_colour(gw, points, space)
            # One picture's URL has died since it was seen.
            gallery = await gallery_of(gw)
            dead = next(p for p in await gallery.store.retrieve(space, [points[0].id]))
            await gallery.store.upsert(space, [replace(dead, urls=(pictures.url("gone", 0),))])
            status, _ = await client.call("GET", "/collections/web/reindex", params={"embedding_model": "clip"})
            assert status == 404

            downloads = pictures.hits.count("/")
            status, started = await client.call("POST", "/collections/web/reindex", params={"embedding_model": "clip"})
            assert status == 202, started
            job = await _until(client, "/collections/web/reindex?embedding_model=clip", None,
                               lambda j: j["state"] == "indexed")
            assert job["done"] == job["total"] == len(points) and job["skipped"] == 1, job
            assert pictures.hits.count("/") - downloads == len(points)  # each downloaded once, the dead one too
            stored = {p.id: p for p in await web_points(gw)}
            assert stored[dead.id].color_scheme is None and (stored[dead.id].color_error or "").startswith("dead_url")
            assert all(p.color_scheme is not None for i, p in stored.items() if i != dead.id)

            # Asked again: nothing left, nothing downloaded (the dead URL is not tried again).
            downloads = pictures.hits.count("/")
            await asyncio.sleep(0.05)
            status, _ = await client.call("POST", "/collections/web/reindex", params={"embedding_model": "clip"})
            assert status == 202
            again = await _until(client, "/collections/web/reindex?embedding_model=clip", None,
                                 lambda j: j["state"] == "indexed" and j["started"] != job["started"])
            assert again["done"] == again["total"] and pictures.hits.count("/") == downloads
            colour = await search(http, gw, sources="gallery", color="colour", max_results="50")
            assert len(colour["results"]) == sum(p.color_scheme == "colour" for p in stored.values())


async def test_a_colour_drawing_and_a_grey_one_are_told_apart() -> None:
    assert colour_facts(Image.open(io.BytesIO(grey_drawing(0)))).scheme == "black_and_grey"
    assert colour_facts(Image.open(io.BytesIO(red_and_blue(0)))).scheme == "colour"

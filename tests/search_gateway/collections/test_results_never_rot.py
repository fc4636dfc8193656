"""Results that never rot (issue 23 part 2): kept thumbnails, link health, the checker's bound.

The real embed server and scraper, the gateway with the embedded store in a tmp folder, and a
fake web site on loopback whose answers the test changes (404, then another picture at the
same URL). Two files of one picture (the same JPEG, one with a byte of padding after its end)
score exactly alike: "a live equal".
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from search_gateway.collections.blob_collector import BlobCollector
from search_gateway.collections.link_checker import FAILURES_TO_STALE, LinkChecker, batch_size, verdict
from search_gateway.errors import DownloadFailed
from search_gateway.fetch.images import webp_thumbnail
from search_gateway.gallery.base import STALE, GalleryFilter, GalleryPoint, VectorSpace, pages
from search_gateway.gallery.spaces import WEB
from search_gateway.metrics import Metrics
from tests.support.background import BackgroundServer
from tests.support.gateway_stack import gateway_settings, image_form
from tests.support.gateway_support import RunningGateway, run_gateway, scraper_server, serve_aiohttp, write_catalog
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio

A, B = "alice-key", "bob-key"


@dataclass
class FakeWeb:
    """/img/<name>: what ``served`` says (status, body); every request is counted."""

    port: int
    served: dict[str, tuple[int, bytes]]
    hits: list[tuple[float, str]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/img/{name}"

    def count(self, since: float = 0.0) -> int:
        return sum(1 for at, _ in self.hits if at >= since)


@pytest_asyncio.fixture
async def fake_web() -> AsyncIterator[FakeWeb]:
    box: dict[str, FakeWeb] = {}

    async def image(request: web.Request) -> web.Response:
        site = box["site"]
        name = request.match_info["name"]
        site.hits.append((time.monotonic(), name))
        status, body = site.served.get(name, (404, b""))
        return web.Response(status=status, body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    async with serve_aiohttp(app) as port:
        box["site"] = FakeWeb(port, {})
        yield box["site"]


PICTURE = jpeg(11, (320, 240))
TWIN = PICTURE + b"\0"  # the same pixels, another content hash: an exact tie
OTHER = jpeg(12, (300, 260))


def _settings(embed: BackgroundServer, scraper: BackgroundServer, site: FakeWeb, tmp: Path, **more: Any):  # type: ignore[no-untyped-def]
    return gateway_settings(embed.target, scraper.target, None, fetch_allow=(f"127.0.0.1:{site.port}",),
                            gallery="on", gallery_path=tmp / "gallery", blobs_path=tmp / "blobs",
                            thumbnails_path=tmp / "thumbnails", blobs_gc_interval_s=0,
                            api_keys=(f"alice:{A}", f"bob:{B}"), **more)


async def search(http: aiohttp.ClientSession, gw: RunningGateway, key: str = A, data: Any = None,
                 **params: str) -> dict[str, Any]:
    async with http.post(f"{gw.url}/search", data=data, params=params, headers={"X-API-Key": key}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def web_points(gw: RunningGateway) -> tuple[VectorSpace, list[GalleryPoint]]:
    source = gw.app.state.collections.gallery
    space = await source.space_for("clip")
    store = (await source.link.gallery()).store
    return space, [p async for page in pages(store, space, GalleryFilter(collections=(WEB,))) for p in page]


def checker(gw: RunningGateway, *, per_minute: int = 6000, period_s: float = 0.05,
            recheck_after_s: float = -5.0) -> LinkChecker:
    source = gw.app.state.collections.gallery

    async def spaces() -> list[VectorSpace]:
        return [await source.space_for("clip")]

    return LinkChecker(source.link, gw.app.state.search.downloader, gw.app.state.metrics, spaces,
                       per_minute=per_minute, period_s=period_s, recheck_after_s=recheck_after_s, timeout_s=1.5,
                       thumbnails=None)


async def check_now(check: LinkChecker) -> Any:
    """One period of ``check`` (a short one), its points all due (checked "before" 5 s from now)."""
    await asyncio.sleep(check.period_s * 1.2)  # a new period: a new lease
    return await check.check_once()


async def fetch_thumbnail(http: aiohttp.ClientSession, gw: RunningGateway, link: str, key: str = A) -> tuple[int, str, bytes]:
    async with http.get(gw.url + link, headers={"X-API-Key": key}) as resp:
        return resp.status, resp.content_type, await resp.read()


async def test_a_remembered_image_whose_source_goes_away_keeps_its_thumbnail_and_ranks_after_a_live_equal(
        embed: BackgroundServer, fake_web: FakeWeb, tmp_path: Path) -> None:
    fake_web.served.update({"a.jpg": (200, PICTURE), "b.jpg": (200, TWIN)})
    catalog = write_catalog(tmp_path / "catalog.jsonl", [fake_web.url("a.jpg"), fake_web.url("b.jpg")])
    with scraper_server(catalog) as scraper:
        async with aiohttp.ClientSession() as http, run_gateway(
                _settings(embed, scraper, fake_web, tmp_path, link_checks_per_minute=0)) as gw:
            first = await search(http, gw, data=image_form(PICTURE), sources="web")
            assert {r["url"] for r in first["results"]} == {fake_web.url("a.jpg"), fake_web.url("b.jpg")}
            await gw.app.state.collections.gallery.writer.drained()
            space, points = await web_points(gw)
            by_url = {p.urls[-1]: p for p in points}
            a, b = by_url[fake_web.url("a.jpg")], by_url[fake_web.url("b.jpg")]
            # Kept once per picture: the twins' pixels are one WebP, one blob.
            assert a.thumbnail and a.thumbnail == b.thumbnail and a.link_state == b.link_state == "live"
            kept = gw.app.state.search.thumbnails
            webp = await kept.get(a.thumbnail)
            assert webp[8:12] == b"WEBP" and max(Image.open(io.BytesIO(webp)).size) == 256
            assert gw.app.state.metrics.thumbnail_bytes._value.get() == len(webp)  # written once

            downloads = fake_web.count()
            body = await search(http, gw, data=image_form(PICTURE), sources="gallery")
            assert fake_web.count() == downloads
            assert [r.get("stale", False) for r in body["results"]] == [False, False]

            check = checker(gw)
            for gone, live in (("a.jpg", "b.jpg"), ("b.jpg", "a.jpg")):
                # The source goes away: 404.
                fake_web.served.update({gone: (404, b""), live: (200, PICTURE if live == "a.jpg" else TWIN)})
                done = await check_now(check)
                assert done.leased and sorted(done.outcomes) == ["gone", "live"], done
                body = await search(http, gw, data=image_form(PICTURE), sources="gallery")
                results = body["results"]
                assert results[0]["score"] == results[1]["score"]  # equal
                # The live one first, the stale one after it, marked, its URL still the link.
                assert [r["url"] for r in results] == [fake_web.url(live), fake_web.url(gone)]
                assert results[1]["stale"] is True and "stale" not in results[0]
                status, kind, data = await fetch_thumbnail(http, gw, results[1]["thumbnail_url"])
                assert status == 200 and kind == "image/webp" and data == webp
                hits = fake_web.count()
                status, kind, _ = await fetch_thumbnail(http, gw, results[0]["thumbnail_url"])
                assert status == 200 and kind == "image/webp" and fake_web.count() == hits  # no trip to the source

            # Then another picture at the same URL: stale, "changed"; the thumbnail is still the kept one.
            fake_web.served.update({"b.jpg": (200, OTHER), "a.jpg": (200, PICTURE)})
            done = await check_now(check)
            assert sorted(done.outcomes) == ["changed", "live"], done
            _, points = await web_points(gw)
            state = {p.urls[-1]: (p.link_state, p.link_reason) for p in points}
            assert state[fake_web.url("b.jpg")] == ("stale", "changed") and state[fake_web.url("a.jpg")] == ("live", None)
            body = await search(http, gw, data=image_form(PICTURE), sources="gallery")
            stale = next(r for r in body["results"] if r["url"] == fake_web.url("b.jpg"))
            assert stale["stale"] is True and body["results"][-1] is stale
            status, kind, data = await fetch_thumbnail(http, gw, stale["thumbnail_url"])
            assert status == 200 and kind == "image/webp" and data == webp
            # The stale-points gauge, from the checker's count.
            assert gw.app.state.metrics.stale_points._value.get() == 1

            # Web thumbnails are public like the web points: another tenant's search shows the same link.
            theirs = await search(http, gw, key=B, data=image_form(PICTURE), sources="gallery")
            link = next(r for r in theirs["results"] if r["url"] == fake_web.url("b.jpg"))["thumbnail_url"]
            assert (await fetch_thumbnail(http, gw, link, key=B))[:2] == (200, "image/webp")

        # A URL seen again in a web search, serving its picture again, refreshes the point: live.
        # (A fresh process: the in-memory embedding cache would answer for the URL without a download.)
        fake_web.served["b.jpg"] = (200, TWIN)
        async with aiohttp.ClientSession() as http, run_gateway(
                _settings(embed, scraper, fake_web, tmp_path, link_checks_per_minute=0)) as gw:
            again = await search(http, gw, data=image_form(PICTURE))
            assert [r.get("stale", False) for r in again["results"]] == [False, False], again["results"]
            await gw.app.state.collections.gallery.writer.drained()
            _, points = await web_points(gw)
            assert [p.link_state for p in points] == ["live", "live"]


async def test_the_gateway_runs_its_checker_when_enabled(
        embed: BackgroundServer, fake_web: FakeWeb, tmp_path: Path) -> None:
    fake_web.served.update({"a.jpg": (200, PICTURE)})
    catalog = write_catalog(tmp_path / "catalog.jsonl", [fake_web.url("a.jpg")])
    with scraper_server(catalog) as scraper:
        async with aiohttp.ClientSession() as http, run_gateway(_settings(
                embed, scraper, fake_web, tmp_path, link_checks_per_minute=600, link_check_period_s=0.1,
                link_recheck_after_s=0)) as gw:
            await search(http, gw, data=image_form(PICTURE), sources="web")
            await gw.app.state.collections.gallery.writer.drained()
            fake_web.served["a.jpg"] = (404, b"")
            for _ in range(60):  # due a second after its write (whole seconds), then checked within a period
                _, points = await web_points(gw)
                if points[0].stale:
                    break
                await asyncio.sleep(0.1)
            assert points[0].link_reason == "gone"
            async with http.get(f"{gw.url}/metrics") as resp:
                text = await resp.text()
            assert 'gateway_link_checks_total{outcome="gone"}' in text and "gateway_stale_web_points 1.0" in text


async def test_a_private_result_never_shows_a_web_thumbnail(
        embed: BackgroundServer, fake_web: FakeWeb, tmp_path: Path) -> None:
    fake_web.served.update({"a.jpg": (200, PICTURE)})
    catalog = write_catalog(tmp_path / "catalog.jsonl", [fake_web.url("a.jpg")])
    with scraper_server(catalog) as scraper:
        async with aiohttp.ClientSession() as http, run_gateway(
                _settings(embed, scraper, fake_web, tmp_path, link_checks_per_minute=0)) as gw:
            await search(http, gw, data=image_form(PICTURE), sources="web")
            await gw.app.state.collections.gallery.writer.drained()
            headers = {"X-API-Key": A}
            async with http.post(f"{gw.url}/collections", json={"name": "flash"}, headers=headers) as resp:
                assert resp.status == 201
            form = aiohttp.FormData()
            # Its twin (same pixels, another file): its own result beside the web one, at the same score.
            form.add_field("file", io.BytesIO(TWIN), filename="a.jpg", content_type="image/jpeg")
            async with http.post(f"{gw.url}/collections/flash/images", data=form, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
            body = await search(http, gw, data=image_form(PICTURE), sources="gallery", max_results="10")
            signer = gw.app.state.search.signer
            links = {r["collection"]: signer.verify(r["thumbnail_url"].rsplit("/", 1)[-1])[0] for r in body["results"]}
            assert links["flash"].startswith("blob:alice/flash/") and links[WEB].startswith("kept:")
            # Bob never sees alice's result; his link for the web picture is the public thumbnail.
            theirs = await search(http, gw, key=B, data=image_form(PICTURE), sources="gallery", max_results="10")
            assert [r["collection"] for r in theirs["results"]] == [WEB]


async def test_the_thumbnail_goes_with_the_last_point_that_holds_it(
        embed: BackgroundServer, fake_web: FakeWeb, tmp_path: Path) -> None:
    fake_web.served.update({"a.jpg": (200, PICTURE), "b.jpg": (200, TWIN)})
    catalog = write_catalog(tmp_path / "catalog.jsonl", [fake_web.url("a.jpg"), fake_web.url("b.jpg")])
    with scraper_server(catalog) as scraper:
        async with aiohttp.ClientSession() as http, run_gateway(
                _settings(embed, scraper, fake_web, tmp_path, link_checks_per_minute=0, blobs_gc_grace_s=0)) as gw:
            await search(http, gw, data=image_form(PICTURE), sources="web")
            await gw.app.state.collections.gallery.writer.drained()
            space, points = await web_points(gw)
            sha = points[0].thumbnail
            assert sha and all(p.thumbnail == sha for p in points) and len(points) == 2
            source = gw.app.state.collections.gallery
            kept = gw.app.state.search.thumbnails

            async def spaces() -> list[VectorSpace]:
                return [space]

            run = BlobCollector(source.link, gw.app.state.collections.blobs, Metrics(), interval_s=0,
                                grace_s=0, thumbnails=kept, spaces=spaces)
            store = (await source.link.gallery()).store
            await store.delete(space, [points[0].id])
            done = await run.collect_thumbnails()
            assert done is not None and done.deleted == () and await kept.exists(sha)  # the twin still holds it
            await store.delete(space, [points[1].id])
            done = await run.collect_thumbnails()
            assert done is not None and done.deleted == (sha,) and not await kept.exists(sha)

            # Unknown spaces (the embed server not answering) collect nothing.
            await kept.put(sha, await asyncio.to_thread(webp_thumbnail, PICTURE, max_pixels=10**7), "image/webp")

            async def none() -> list[VectorSpace]:
                return []

            blind = BlobCollector(source.link, gw.app.state.collections.blobs, Metrics(), interval_s=0,
                                  grace_s=0, thumbnails=kept, spaces=none)
            assert await blind.collect_thumbnails() is None and await kept.exists(sha)


async def test_the_checker_keeps_its_bound_with_two_replicas(
        embed: BackgroundServer, fake_web: FakeWeb, tmp_path: Path) -> None:
    names = [f"{i}.jpg" for i in range(10)]
    fake_web.served.update({n: (200, jpeg(40 + i, (200, 160))) for i, n in enumerate(names)})
    catalog = write_catalog(tmp_path / "catalog.jsonl", [fake_web.url(n) for n in names])
    with scraper_server(catalog) as scraper:
        async with aiohttp.ClientSession() as http, run_gateway(
                _settings(embed, scraper, fake_web, tmp_path, link_checks_per_minute=0)) as gw:
            await search(http, gw, data=image_form(PICTURE), sources="web", max_results="10")
            await gw.app.state.collections.gallery.writer.drained()
            # 120 a minute in periods of 0.25 s: half a check a period, one every half second.
            per_minute, period = 120, 0.25
            replicas = [checker(gw, per_minute=per_minute, period_s=period, recheck_after_s=0.0) for _ in range(2)]
            start = time.monotonic()
            for r in replicas:
                r.start()
            await asyncio.sleep(3.0)
            for r in replicas:
                await r.close()
            elapsed = time.monotonic() - start
            hits = fake_web.count(start)
            allowed = per_minute * elapsed / 60
            # Within the rate, not twice it (two replicas), and the checker did run.
            assert 2 <= hits <= allowed + 1, (hits, allowed)


def test_batches_spread_the_rate_exactly_and_one_timeout_is_not_stale() -> None:
    assert [batch_size(30, 60.0, k) for k in range(3)] == [30, 30, 30]
    assert sum(batch_size(120, 0.25, k) for k in range(40)) == 20  # 10 s at 120 a minute
    assert sum(batch_size(7, 1.0, k) for k in range(600)) == 70
    point = GalleryPoint("ab" * 32, (1.0,), urls=("http://x/a.jpg",), link_state="live")
    now = __import__("datetime").datetime.now(__import__("datetime").UTC)
    for n in range(1, FAILURES_TO_STALE):
        point, outcome = verdict(point, now, failure=DownloadFailed("late", reason="timeout"))
        assert outcome == "failed" and point.link_state == "live" and point.link_failures == n
    point, outcome = verdict(point, now, failure=DownloadFailed("late", reason="timeout"))
    assert outcome == "unreachable" and point.link_state == STALE and point.link_reason == "unreachable"
    gone, outcome = verdict(point, now, failure=DownloadFailed("x", reason="http_4xx", http_status=410))
    assert outcome == "gone" and gone.link_reason == "gone"
    forbidden, outcome = verdict(replace_state(point), now, failure=DownloadFailed("x", reason="http_4xx",
                                                                                    http_status=403))
    assert outcome == "failed" and forbidden.link_state == "live"


def test_the_thumbnails_never_share_the_originals_namespace() -> None:
    from search_gateway.config import ConfigError, GatewaySettings

    with pytest.raises(ConfigError, match="GATEWAY_THUMBNAILS_PREFIX"):
        GatewaySettings(thumbnails_prefix="blobs/")
    with pytest.raises(ConfigError, match="GATEWAY_THUMBNAILS_PATH"):
        GatewaySettings(thumbnails_path=Path("var/blobs"))


def replace_state(point: GalleryPoint) -> GalleryPoint:
    from dataclasses import replace

    return replace(point, link_state="live", link_reason=None, link_failures=0)


@pytest.mark.parametrize("engine", ["edge", "qdrant-local"])
async def test_both_engines_order_by_the_oldest_check_and_filter_link_health(engine: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from search_gateway.gallery.factory import open_store

    store = await (open_store(path=tmp_path / "g") if engine == "edge" else open_store(url=":memory:"))
    try:
        space, now = VectorSpace("m", "f", 2), datetime.now(UTC)
        points = [GalleryPoint(f"{i:064x}", (1.0, float(i)), urls=(f"http://x/{i}",),
                               link_checked=now - timedelta(days=i) if i else None,
                               link_state="stale" if i == 2 else "live", thumbnail="e" * 64 if i == 1 else None)
                  for i in range(4)]
        await store.upsert(space, points)
        oldest = await store.scroll(space, limit=10, oldest_checked=True)
        assert [p.content_hash[-1] for p in oldest.points] == ["3", "2", "1"] and oldest.next is None
        never = await store.scroll(space, limit=10, filter=GalleryFilter(link_unchecked=True))
        assert [p.content_hash[-1] for p in never.points] == ["0"]
        assert await store.count(space, GalleryFilter(link_state=STALE)) == 1
        assert await store.count(space, GalleryFilter(thumbnails=("e" * 64,))) == 1
        assert await store.count(space, GalleryFilter(checked_before=now - timedelta(days=1, hours=12))) == 2
        back = {p.content_hash[-1]: p for p in await store.retrieve(space, [p.id for p in points])}
        assert back["2"].stale and back["1"].thumbnail == "e" * 64 and back["0"].link_checked is None
        assert back["3"].link_checked == (now - timedelta(days=3)).replace(microsecond=0)
    finally:
        await store.close()

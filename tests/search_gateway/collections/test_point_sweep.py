"""The sweep of private points no collection record holds (search_gateway/collections/point_sweep.py):
against the real embedded gallery store, and through a real gateway whose scheduled
collector removes record-less points left in the store it uses."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio

from search_gateway.collections.point_sweep import PointSweep, configured_tenants
from search_gateway.collections.records import CollectionRecords
from search_gateway.gallery import Gallery, GalleryPoint, GalleryStore, VectorSpace, open_store
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.qdrant import MEMORY
from search_gateway.metrics import Metrics
from tests.support.background import BackgroundServer
from tests.support.collections_support import A
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import RunningGateway, run_gateway
from tests.support.images import jpeg
from tests.support.polling import until

pytestmark = pytest.mark.asyncio

DIM = 8
CLIP = VectorSpace("clip", "random-clip-seed0", DIM)
DINO = VectorSpace("dinov2", "random-dinov2-seed0", DIM)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRACE_S = 3600.0
OLD = NOW - timedelta(seconds=GRACE_S + 60)
YOUNG = NOW - timedelta(seconds=GRACE_S - 60)


def _vector(n: int) -> tuple[float, ...]:
    v = np.random.default_rng(n).standard_normal(DIM)
    return tuple((v / np.linalg.norm(v)).tolist())


def _point(n: int, tenant: str | None = "studio-a", collection: str = "flash", *, written: datetime = OLD,
           first: datetime | None = None) -> GalleryPoint:
    return GalleryPoint(hashlib.sha256(str(n).encode()).hexdigest(), _vector(n), collection, tenant,
                        first_seen=first or written, last_seen=written)


@pytest_asyncio.fixture(params=["edge", "qdrant"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GalleryStore]:
    """Both engines: the embedded one, and qdrant-client's local mode (a server's API)."""
    opened = await (open_store(path=tmp_path / "gallery") if request.param == "edge" else open_store(url=MEMORY))
    try:
        yield opened
    finally:
        await opened.close()


def _sweep(store: GalleryStore, *, tenants: tuple[str, ...] = ("studio-a",), page: int = 1000,
           spaces: tuple[VectorSpace, ...] = (CLIP, DINO)) -> tuple[PointSweep, Metrics]:
    async def opener() -> GalleryStore:
        return store

    async def served() -> list[VectorSpace]:  # what ListModels names, without an embed server
        return list(spaces)

    metrics = Metrics()
    link = GalleryLink(opener, "tmp", retry_s=1.0)
    return PointSweep(link, served, metrics, grace_s=GRACE_S, tenants=tenants, page=page), metrics


async def _ids(store: GalleryStore, space: VectorSpace, points: list[GalleryPoint]) -> set[str]:
    return {p.id for p in await store.retrieve(space, [p.id for p in points])}


async def test_old_points_without_a_record_go_and_young_recorded_and_public_ones_stay(store: GalleryStore) -> None:
    recs = CollectionRecords(store)
    orphan, young, recorded = _point(1), _point(2, written=YOUNG), _point(3)
    # Written long ago, then again by an upload whose record is still on its way: young.
    rewritten = _point(4, written=YOUNG, first=OLD - timedelta(days=30))
    public = _point(1, tenant=None, collection="web")  # the same picture on the public web
    public_stray = _point(5, tenant=None, collection="old-public")  # no tenant: never ours to judge
    theirs = _point(6, tenant="studio-b")  # a tenant without keys now, with a collection record
    in_dino = _point(7)
    await store.upsert(CLIP, [orphan, young, recorded, rewritten, public, public_stray, theirs])
    await store.upsert(DINO, [in_dino])
    await recs.add_image(recorded)
    await recs.create("studio-b", "flash")

    sweep, metrics = _sweep(store)
    done = await sweep.sweep_once(now=NOW)

    assert done.deleted == {"studio-a": 2, "studio-b": 1}, done
    assert await _ids(store, CLIP, [orphan, theirs]) == set()
    assert await _ids(store, DINO, [in_dino]) == set()
    kept = [young, recorded, rewritten, public, public_stray]
    assert await _ids(store, CLIP, kept) == {p.id for p in kept}
    assert metrics.registry.get_sample_value("gateway_points_swept_total") == 3.0
    # Nothing left to sweep: a second run deletes nothing and counts nothing.
    assert (await sweep.sweep_once(now=NOW)).deleted == {}
    assert metrics.registry.get_sample_value("gateway_points_swept_total") == 3.0
    # Once the young one is past the grace too, with its record still missing, it goes.
    later = await sweep.sweep_once(now=NOW + timedelta(seconds=GRACE_S))
    assert later.deleted == {"studio-a": 2} and await _ids(store, CLIP, [young, rewritten]) == set()


async def test_a_picture_written_again_through_the_gallery_is_young_however_old_its_point(
        store: GalleryStore) -> None:
    """An interrupted upload left the point long ago; an upload of the same picture now
    re-writes it (Gallery.remember) before writing its record: the sweep must wait."""
    stale = _point(10, written=OLD - timedelta(days=3))
    await store.upsert(CLIP, [stale])
    await Gallery(store, clock=lambda: NOW).remember(CLIP, [replace(stale, first_seen=None, last_seen=None)])
    [merged] = await store.retrieve(CLIP, [stale.id])
    assert merged.first_seen == stale.first_seen and merged.last_seen == NOW

    sweep, _ = _sweep(store)
    assert (await sweep.sweep_once(now=NOW)).deleted == {}
    assert await _ids(store, CLIP, [stale]) == {stale.id}


async def test_a_point_written_again_after_its_page_was_read_is_not_deleted(store: GalleryStore) -> None:
    """The age is read again right before the delete: the page the sweep holds may be
    older than an upload (on another replica) that has just re-written the point."""
    seen = _point(20)
    await store.upsert(CLIP, [seen])
    await Gallery(store, clock=lambda: NOW).remember(CLIP, [replace(seen, first_seen=None, last_seen=None)])

    sweep, _ = _sweep(store)
    assert await sweep._sweep(store, CLIP, [seen], NOW - timedelta(seconds=GRACE_S)) == 0
    assert await _ids(store, CLIP, [seen]) == {seen.id}


async def test_the_sweep_pages_through_more_points_than_one_scroll_page(store: GalleryStore) -> None:
    orphans = [_point(100 + n) for n in range(10)]
    recorded = [_point(200 + n) for n in range(4)]
    await store.upsert(CLIP, orphans + recorded)
    for point in recorded:
        await CollectionRecords(store).add_image(point)

    sweep, _ = _sweep(store, page=3)
    done = await sweep.sweep_once(now=NOW)

    assert done.examined == 14 and done.deleted == {"studio-a": 10}, done
    assert await _ids(store, CLIP, orphans) == set()
    assert await _ids(store, CLIP, recorded) == {p.id for p in recorded}


async def test_replicas_sweeping_at_once_delete_each_point_once_and_fail_nothing(store: GalleryStore) -> None:
    orphans = [_point(300 + n) for n in range(7)]
    await store.upsert(CLIP, orphans)
    first, _ = _sweep(store, page=2)
    second, _ = _sweep(store, page=3)

    done = await asyncio.gather(first.sweep_once(now=NOW), second.sweep_once(now=NOW))

    assert await _ids(store, CLIP, orphans) == set()
    assert 7 <= sum(d.deleted.get("studio-a", 0) for d in done) <= 14


def test_the_swept_tenants_are_those_the_keys_name_or_local_without_keys() -> None:
    named = configured_tenants(["studio-a:k1", "studio-a:k2", "plain-key"], b"tenant secret")
    assert named[1] == "studio-a" and named[0].startswith("key-") and len(named) == 2
    assert configured_tenants([], b"tenant secret") == ("local",)


# --- through a real gateway

async def test_the_gateways_collector_sweeps_points_an_upload_left_without_a_record(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    held, lost = jpeg(110, (240, 200)), jpeg(111, (250, 210))
    settings = _settings(embed, scraper, site, tmp_path, blobs_gc_interval_s=0.1, blobs_gc_grace_s=600)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
            async with http.request(method, gw.url + path, headers=A, **kw) as resp:
                return resp.status, await resp.json()

        async def found(picture: bytes) -> set[str]:
            form = aiohttp.FormData()
            form.add_field("file", picture, filename="q.jpg", content_type="image/jpeg")
            status, body = await call("POST", "/search", data=form, params={
                "embedding_model": "clip", "collections": "flash", "sources": "gallery", "max_results": "50"})
            assert status == 200, body
            return {r["id"] for r in body["results"]}

        assert (await call("POST", "/collections", json={"name": "flash"}))[0] == 201
        form = aiohttp.FormData()
        form.add_field("file", held, filename="held.jpg", content_type="image/jpeg")
        form.add_field("embedding_model", "clip")
        status, body = await call("POST", "/collections/flash/images", data=form)
        assert status == 200 and body["results"][0]["status"] == "added", body
        held_id = body["results"][0]["id"]

        # What a gateway killed between the points and the record leaves: the bytes, and
        # the point (with the held picture's vector, so the search would find it).
        gateway = gw.app.state.collections
        space = await gateway.gallery.space_for("clip")
        gallery = await gateway.gallery.link.gallery()
        [stored] = await gallery.store.retrieve(space, [held_id])
        sha256 = hashlib.sha256(lost).hexdigest()
        await gateway.blobs.put(sha256, lost, "image/jpeg")
        [orphan] = await gallery.remember(space, [replace(stored, content_hash=sha256, title="lost.jpg",
                                                          first_seen=None, last_seen=None)])
        # While it is young (an upload in progress looks the same), it stays: two runs later too.
        runs = await _runs(http, gw)
        await until(lambda: _more_runs(http, gw, runs + 2), "two more collector runs")
        assert orphan.id in await found(held)

        # Past the grace (600 s) with still no record: the next run deletes it; the held
        # image, as old, keeps its point (its record holds it).
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        await gallery.store.upsert(space, [replace(orphan, first_seen=long_ago, last_seen=long_ago),
                                           replace(stored, first_seen=long_ago, last_seen=long_ago)])

        async def swept() -> bool:
            return not await gallery.store.retrieve(space, [orphan.id])

        await until(swept, "the record-less point was swept")
        assert await found(held) == {held_id}
        assert [p.id for p in await gallery.store.retrieve(space, [held_id])] == [held_id]
        async with http.get(f"{gw.url}/metrics") as resp:
            assert "gateway_points_swept_total 1.0" in await resp.text()


async def _runs(http: aiohttp.ClientSession, gw: RunningGateway) -> float:
    async with http.get(f"{gw.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith('gateway_blobs_gc_runs_total{result="ok"}'):
                return float(line.split()[-1])
    return 0.0


async def _more_runs(http: aiohttp.ClientSession, gw: RunningGateway, at_least: float) -> bool:
    return await _runs(http, gw) >= at_least

"""Collections, issue 13's last pieces: reindex with another model in the background,
blob garbage collection on a schedule, and no orphan point (bytes gone) ever shown.
Real embed and scraper servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import aiohttp
import pytest

from search_gateway.collections.reindex import Reindexer
from search_gateway.errors import Conflict
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B, CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg
from tests.support.polling import until

pytestmark = pytest.mark.asyncio



async def test_reindex_embeds_a_collection_with_another_model_in_the_background(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(60 + i, (220 + 10 * i, 200)) for i in range(3)]
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        ids = await c.added("flash", pictures, "clip")
        listed = await c.collection("flash")
        assert listed["models"] == ["clip"] and listed["index"] == {"clip": {"state": "indexed"}}, listed
        assert await c.search(pictures[0], "dinov2", "flash") == []  # not embedded with dinov2 yet

        # Refusals: no model, an unknown model (the valid ones named), another tenant's collection.
        status, body = await c.call("POST", "/collections/flash/reindex")
        assert status == 400 and "embedding_model" in body["detail"], body
        status, body = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "nope"})
        assert status == 400 and "clip" in body["detail"] and "dinov2" in body["detail"], body
        status, body = await c.call("POST", "/collections/flash/reindex", B, params={"embedding_model": "dinov2"})
        assert status == 404, body

        # While the gateway's one running slot is taken, the job waits: a second ask is 409.
        reindexer = gw.app.state.collections.reindex
        async with reindexer._slot:
            status, body = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
            assert status == 202 and body["state"] == "queued" and body["total"] == 3, body
            status, again = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
            assert status == 409 and "already running" in again["detail"], again
            assert (await c.collection("flash"))["index"]["dinov2"]["state"] == "queued"
        await until(lambda: c.indexed("flash", "dinov2"), "the reindex finished")
        listed = await c.collection("flash")
        assert listed["models"] == ["clip", "dinov2"] and listed["images"] == 3, listed
        assert listed["index"]["dinov2"]["state"] == "indexed"

        found = await c.search(pictures[1], "dinov2", "flash")
        assert [r["id"] for r in found][:1] == [ids[1]] and sorted(r["id"] for r in found) == sorted(ids), found
        assert found[0]["score"] == pytest.approx(1.0, abs=1e-3)

        # Re-running is idempotent (same point ids); deleting an image takes its new point too.
        status, _ = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
        assert status == 202
        await until(lambda: c.indexed("flash", "dinov2"), "the second reindex finished")
        assert sorted(r["id"] for r in await c.search(pictures[1], "dinov2", "flash")) == sorted(ids)
        assert (await c.call("DELETE", f"/collections/flash/images/{ids[1]}"))[0] == 204
        assert ids[1] not in [r["id"] for r in await c.search(pictures[1], "dinov2", "flash")]


async def test_a_reindex_cut_short_by_a_restart_shows_interrupted_and_can_be_asked_again(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(70 + i, (230, 210)) for i in range(2)]
    # Heartbeats of 0.1 s: the job's record reads as interrupted 0.6 s after its gateway stopped.
    settings = _settings(embed, scraper, site, tmp_path, reindex_heartbeat_s=0.1)
    async with aiohttp.ClientSession() as http:
        async with run_gateway(settings) as gw:
            c = CollectionsClient(http, gw)
            assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
            await c.added("flash", pictures, "clip")
            await gw.app.state.collections.reindex._slot.acquire()  # the job never gets to run in this process
            status, _ = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
            assert status == 202
        async with run_gateway(settings) as gw:
            c = CollectionsClient(http, gw)

            async def interrupted() -> bool:
                state = (await c.collection("flash"))["index"]["dinov2"]
                assert state["state"] in ("queued", "interrupted"), state
                return state["state"] == "interrupted" and "again" in state["reason"]

            await until(interrupted, "the dead gateway's job read as interrupted")
            status, body = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
            assert status == 202, body
            await until(lambda: c.indexed("flash", "dinov2"), "the asked-again reindex finished")
            assert len(await c.search(pictures[0], "dinov2", "flash")) == 2


async def test_a_job_alive_on_another_replica_is_never_called_interrupted_and_never_runs_twice(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """Two replicas on one store: B, started after A's job, sees it live while A's heartbeat
    beats (the old rule, "started before this process", called it interrupted at once and
    let B run it a second time), and interrupted only once A has gone silent."""
    settings = _settings(embed, scraper, site, tmp_path, reindex_heartbeat_s=0.1)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        await c.added("flash", [jpeg(75, (230, 210))], "clip")
        a = gw.app.state.collections.reindex
        await a._slot.acquire()  # A's job waits (queued) for as long as the test wants
        status, _ = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
        assert status == 202
        await asyncio.sleep(0.05)
        b = Reindexer(a.link, a.blobs, a.embed, a.limits, a.batch_images, a.batch_bytes, heartbeat_s=0.1)
        for _ in range(12):  # 1.2 s: twice the staleness bound, all alive
            (job,) = (await b.jobs_of("studio-a"))["flash"]
            assert job.state == "queued", job
            await asyncio.sleep(0.1)
        with pytest.raises(Conflict, match="already running"):
            await b.start("studio-a", "flash", "dinov2", 1)

        for task in list(a._tasks.values()):  # A dies: its job and heartbeat stop, the record stays
            task.cancel()
        await asyncio.sleep(0.8)
        (job,) = (await b.jobs_of("studio-a"))["flash"]
        assert job.state == "interrupted" and "again" in job.reason, job
        await b.start("studio-a", "flash", "dinov2", 1)
        await until(lambda: c.indexed("flash", "dinov2"), "B's job finished")
        await b.close()
        a._slot.release()


async def test_the_image_listing_pages_through_every_image_once(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        ids = await c.added("flash", [jpeg(100 + i, (200, 180 + i)) for i in range(5)], "clip")
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            status, page = await c.call("GET", "/collections/flash/images",
                                        params={"limit": "2", **({"cursor": cursor} if cursor else {})})
            assert status == 200 and page["total"] == 5 and len(page["images"]) <= 2, page
            seen += [image["id"] for image in page["images"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and pages == 3
        status, page = await c.call("GET", "/collections/flash/images")
        assert status == 200 and len(page["images"]) == 5 and page["next"] is None, page

        for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "two"}, {"cursor": "not-a-cursor"}, {"cursor": ""}):
            status, body = await c.call("GET", "/collections/flash/images", params=params)
            assert status == 400 and next(iter(params)) in body["detail"], (params, body)
        status, _ = await c.call("GET", "/collections/flash/images", B)
        assert status == 404


async def test_the_blob_collector_deletes_unreferenced_originals_past_the_grace_on_a_schedule(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    settings = _settings(embed, scraper, site, tmp_path, blobs_gc_interval_s=0.1, blobs_gc_grace_s=600)
    held, old_orphan, young_orphan = jpeg(80, (200, 190)), jpeg(81, (200, 190)), jpeg(82, (200, 190))

    def path(data: bytes) -> Path:
        sha256 = hashlib.sha256(data).hexdigest()
        return tmp_path / "blobs" / sha256[:2] / sha256[2:4] / sha256

    def age(data: bytes) -> None:
        long_ago = time.time() - 7200  # two hours: past the 600 s grace
        os.utime(path(data), (long_ago, long_ago))

    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        await c.added("flash", [held], "clip")
        blobs = gw.app.state.collections.blobs
        for orphan in (old_orphan, young_orphan):  # bytes of uploads that never wrote their points
            await blobs.put(hashlib.sha256(orphan).hexdigest(), orphan, "image/jpeg")
        age(held)  # old too: only its record keeps it
        age(old_orphan)

        async def collected() -> bool:
            return not path(old_orphan).exists()

        await until(collected, "the old unreferenced original was collected")
        assert path(held).exists() and path(young_orphan).exists()
        async with http.get(f"{gw.url}/metrics") as resp:
            assert 'gateway_blobs_collected_total{kind="deleted"} 1.0' in await resp.text()
        async with http.get(f"{gw.url}/collections/flash/images", headers=A) as resp:
            (image,) = (await resp.json())["images"]
        async with http.get(gw.url + image["thumbnail"], headers=A) as resp:
            assert resp.status == 200


async def test_an_image_whose_original_was_deleted_by_hand_is_never_shown_and_is_removed(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    kept, lost = jpeg(90, (240, 200)), jpeg(91, (250, 200))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        kept_id, lost_id = await c.added("flash", [kept, lost], "clip")
        sha256 = hashlib.sha256(lost).hexdigest()
        (tmp_path / "blobs" / sha256[:2] / sha256[2:4] / sha256).unlink()  # an operator's slip

        status, listed = await c.call("GET", "/collections/flash/images")
        assert status == 200 and [i["id"] for i in listed["images"]] == [kept_id] and listed["total"] == 1, listed
        assert (await c.call("GET", f"/collections/flash/images/{lost_id}"))[0] == 404
        found = await c.search(lost, "clip", "flash")
        assert [r["id"] for r in found] == [kept_id], found
        async with http.get(gw.url + found[0]["thumbnail_url"], headers=A) as resp:
            assert resp.status == 200

        async def removed() -> bool:
            return bool((await c.collection("flash"))["images"] == 1)

        await until(removed, "the orphan's record and points were removed")
        # Removed, not just hidden: the same picture uploaded again is added, not a "duplicate".
        assert await c.added("flash", [lost], "clip") == [lost_id]
        assert sorted(r["id"] for r in await c.search(lost, "clip", "flash")) == sorted([kept_id, lost_id])

"""A tenant's image quota (GATEWAY_TENANT_MAX_IMAGES): one customer cannot fill the
disks; past it an upload's new images are rejected with the reason, the others still
added, duplicates free, and another tenant's room untouched. Real embed and scraper
servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from search_gateway.collections.quota import Limits, Quota, sweep
from search_gateway.collections.records import CollectionRecords
from search_gateway.gallery.base import GalleryPoint
from search_gateway.gallery.edge import EdgeGalleryStore
from tests.support.background import BackgroundServer
from tests.support.collections_support import B, CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio


async def test_past_its_quota_a_tenants_new_images_are_rejected_and_the_rest_still_added(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(190 + i, (210 + 8 * i, 200)) for i in range(5)]
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_images=3)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        for name in ("flash", "portfolio"):
            assert (await c.call("POST", "/collections", json={"name": name}))[0] == 201
        first = await c.added("flash", pictures[:2], "clip")

        # Counted across collections: one more fits, in another collection; a duplicate is free.
        status, body = await c.upload("portfolio", [pictures[2], pictures[3]], "clip")
        assert status == 200, body
        added, refused = body["results"]
        assert added["status"] == "added", added
        assert refused["status"] == "rejected" and "(3)" in refused["reason"], refused
        status, body = await c.upload("flash", [pictures[0], pictures[4]], "clip")
        assert [r["status"] for r in body["results"]] == ["duplicate", "rejected"], body
        status, listed = await c.call("GET", "/collections")
        usage = listed["usage"]
        assert (usage["images"], usage["max_images"]) == (3, 3), listed
        assert usage["collections"] == 2 and usage["bytes"] >= sum(map(len, pictures[:3])), listed

        # Another tenant has its own room.
        assert (await c.call("POST", "/collections", B, json={"name": "flash"}))[0] == 201
        assert len(await c.added("flash", pictures[:3], "clip", headers=B)) == 3

        # Room again once an image is deleted.
        assert (await c.call("DELETE", f"/collections/flash/images/{first[1]}"))[0] == 204
        assert len(await c.added("flash", [pictures[4]], "clip")) == 1
        assert (await c.call("GET", "/collections"))[1]["usage"]["images"] == 3


async def test_fifty_uploads_at_once_never_take_a_tenant_past_its_quota(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """Each request reserves its room before the work (quota.py): 50 requests of 3 new
    images against a quota of 20 add exactly 20 (before: every request saw the same room
    and 10 requests of 10 added 100)."""
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_images=20)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        requests = [[jpeg(5000 + 3 * r + i, (150 + i, 140 + r)) for i in range(3)] for r in range(50)]
        answers = await asyncio.gather(*(c.upload("flash", pictures, "clip") for pictures in requests))
        results = [result for status, body in answers for result in body["results"]]
        assert all(status == 200 for status, _ in answers)
        added = [r for r in results if r["status"] == "added"]
        refused = [r for r in results if r["status"] == "rejected"]
        assert len(added) == 20 and len(refused) == 130, sorted({r["status"] for r in results})
        assert all(r["code"] == "quota_reached" and "(20)" in r["reason"] for r in refused)
        listed = (await c.call("GET", "/collections"))[1]
        assert listed["usage"]["images"] == 20 and (await c.collection("flash"))["images"] == 20


async def test_two_replicas_reserving_at_once_never_pass_the_quota(tmp_path: Path) -> None:
    """Two replicas (two Quota objects, each with its own turns) on one store, 50 uploads
    between them at once: never over the limit, and nothing of a reservation left behind."""
    store = await EdgeGalleryStore.open(tmp_path / "gallery")
    try:
        recs = CollectionRecords(store)
        replicas = [Quota(Limits(images=20, bytes=0)), Quota(Limits(images=20, bytes=0))]
        rng = random.Random(5)

        async def upload(n: int) -> int:
            reservation = await replicas[n % 2].reserve(recs, "studio-a", [1000] * 3)
            await asyncio.sleep(rng.uniform(0, 0.02))  # the embedding
            for k in range(reservation.granted):
                assert await recs.add_image(GalleryPoint(f"{n}-{k}", None, "flash", "studio-a", bytes=1000))
            await reservation.release()
            return reservation.granted

        granted = sum(await asyncio.gather(*(upload(n) for n in range(50))))
        assert 0 < granted <= 20
        assert await recs.image_count("studio-a") == granted  # the reservations are all gone
    finally:
        await store.close()


async def test_bytes_count_against_a_byte_quota_until_they_are_collected(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """GATEWAY_TENANT_MAX_BYTES: originals count while held and, once let go, until the
    collector may take them; then the room comes back."""
    pictures = [jpeg(5300 + i, (300, 280)) for i in range(4)]
    room = int(sum(map(len, pictures[:2])) * 1.1) + 100  # two fit (sizes count up to 10% over), three do not
    # A release grace long enough that the deleted originals stay for the collector.
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_bytes=room, blobs_release_grace_s=3600)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        status, body = await c.upload("flash", pictures[:3], "clip")
        assert [r["status"] for r in body["results"]] == ["added", "added", "rejected"], body
        assert body["results"][2]["code"] == "quota_reached" and "bytes" in body["results"][2]["reason"]
        usage = (await c.call("GET", "/collections"))[1]["usage"]
        assert sum(map(len, pictures[:2])) <= usage["bytes"] <= room and usage["max_bytes"] == room

        first = body["results"][0]["id"]
        assert (await c.call("DELETE", f"/collections/flash/images/{first}"))[0] == 204
        # Its bytes wait for the collector and still count: no room yet.
        status, body = await c.upload("flash", [pictures[3]], "clip")
        assert body["results"][0]["status"] == "rejected", body
        # The collector's step, once its grace (0 here) has passed: the released entry goes.
        store = (await gw.app.state.collections.gallery.link.gallery()).store
        assert await sweep(store, reservation_ttl_s=3600, released_ttl_s=0) == 1
        await c.added("flash", [pictures[3]], "clip")


async def test_a_tenants_collections_are_limited_also_when_created_at_once(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_collections=3)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        answers = await asyncio.gather(*(c.call("POST", "/collections", json={"name": f"c{i}"}) for i in range(10)))
        assert sorted(status for status, _ in answers) == [201] * 3 + [409] * 7, answers
        assert all(body["error"] == "quota_reached" and "(3)" in body["detail"]
                   for status, body in answers if status == 409)
        usage = (await c.call("GET", "/collections"))[1]["usage"]
        assert (usage["collections"], usage["max_collections"]) == (3, 3)
        assert (await c.call("POST", "/collections", B, json={"name": "c0"}))[0] == 201  # another tenant's room


async def test_listing_collections_costs_the_same_for_3_or_30(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """One facet counts every collection's images (before: one count query per collection)."""
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        store = (await gw.app.state.collections.gallery.link.gallery()).store
        calls: list[str] = []
        for name in ("count", "facet", "scroll", "retrieve", "search"):
            real = getattr(store, name)

            async def counted(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                calls.append(_name)
                return await _real(*args, **kw)

            setattr(store, name, counted)
        costs = []
        for total in (3, 30):
            while len((await c.call("GET", "/collections"))[1]["collections"]) - 1 < total:
                n = len(calls)
                assert (await c.call("POST", "/collections", json={"name": f"c{n}"}))[0] == 201
            calls.clear()
            status, body = await c.call("GET", "/collections")
            assert status == 200 and len(body["collections"]) == total + 1
            costs.append(len(calls))
        assert costs[0] == costs[1], costs

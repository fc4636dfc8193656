"""Deleting a collection: gone for its tenant at once (searches, listings, every route,
its name taken), emptied in the background, and finished by the collector when the
gateway that began it stopped half-way. Real embed and scraper servers, the embedded
gallery store and local blobs in tmp."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from search_gateway.collections.records import CollectionRecords
from search_gateway.collections.uploads import Input, Uploader
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B, CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import RunningGateway, run_gateway
from tests.support.images import jpeg
from tests.support.polling import until

pytestmark = pytest.mark.asyncio


async def _records(gw: RunningGateway) -> CollectionRecords:
    return CollectionRecords((await gw.app.state.collections.gallery.link.gallery()).store)


def _stored(tmp: Path, picture: bytes) -> bool:
    sha256 = hashlib.sha256(picture).hexdigest()
    return (tmp / "blobs" / sha256[:2] / sha256[2:4] / sha256).is_file()


async def test_a_deleted_collection_is_gone_at_once_and_emptied_behind_the_204(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(150 + i, (230 + 9 * i, 210)) for i in range(3)]
    theirs = jpeg(160, (240, 200))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        for headers in (A, B):
            assert (await c.call("POST", "/collections", headers, json={"name": "flash"}))[0] == 201
        ids = await c.added("flash", pictures, "clip", "dinov2")
        (their_id,) = await c.added("flash", [theirs], "clip", headers=B)

        assert (await c.call("DELETE", "/collections/flash"))[0] == 204
        # Its points went before the 204: never found again, even by a search of every collection.
        for model in ("clip", "dinov2"):
            found = await c.search(pictures[0], model, None)
            assert not {r["id"] for r in found} & set(ids), found
        assert "flash" not in [x["name"] for x in (await c.call("GET", "/collections"))[1]["collections"]]

        await gw.app.state.collections.deleter.settled()  # the background emptying
        assert not any(_stored(tmp_path, p) for p in pictures) and _stored(tmp_path, theirs)
        recs = await _records(gw)
        assert await recs.find("studio-a", "flash") is None and await recs.count("studio-a", "flash") == 0
        # The other tenant's collection of the same name is untouched.
        assert [r["id"] for r in await c.search(theirs, "clip", "flash", B)][:1] == [their_id]
        # The name is free again, and nothing of the old collection comes back with it.
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        assert (await c.collection("flash"))["images"] == 0
        assert await c.added("flash", [pictures[0]], "clip") == [ids[0]]  # added again, not a "duplicate"


async def test_a_collection_left_half_deleted_by_a_stopped_gateway_is_finished_by_the_collector(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(170 + i, (220, 200 + 7 * i)) for i in range(4)]
    async with aiohttp.ClientSession() as http:
        # blobs_gc_interval_s=0: no collector here, as in a gateway killed after the mark.
        async with run_gateway(_settings(embed, scraper, site, tmp_path, blobs_gc_interval_s=0)) as gw:
            c = CollectionsClient(http, gw)
            assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
            ids = await c.added("flash", pictures, "clip")
            # What a gateway killed right after marking it leaves: the mark, every record, every original.
            recs = await _records(gw)
            collection = await recs.get("studio-a", "flash")
            assert collection is not None
            await recs.mark_deleting(collection)

            # Gone for its tenant on every route, its name still taken, though nothing is emptied yet.
            assert "flash" not in [x["name"] for x in (await c.call("GET", "/collections"))[1]["collections"]]
            for method, path in (("GET", f"/collections/flash/images/{ids[0]}"), ("GET", "/collections/flash/images"),
                                 ("DELETE", f"/collections/flash/images/{ids[0]}"), ("DELETE", "/collections/flash"),
                                 ("POST", "/collections/flash/reindex")):
                status, body = await c.call(method, path, params={"embedding_model": "clip"})
                assert status == 404, (method, path, body)
            assert (await c.upload("flash", [jpeg(180, (200, 200))], "clip"))[0] == 404
            # Its points are still in the store (the kill came before they went), yet a search of
            # "all my collections" asks for the live ones by name and never finds them.
            assert not {r["id"] for r in await c.search(pictures[0], "clip", None)} & set(ids)
            status, body = await c.call("POST", "/collections", json={"name": "flash"})
            assert status == 409 and "still being emptied" in body["detail"], body
            assert all(_stored(tmp_path, p) for p in pictures) and await recs.count("studio-a", "flash") == 4
        settings = _settings(embed, scraper, site, tmp_path, blobs_gc_interval_s=0.1)
        async with run_gateway(settings) as gw:
            c = CollectionsClient(http, gw)
            assert (await c.call("GET", "/collections/flash/images"))[0] == 404
            recs = await _records(gw)

            async def finished() -> bool:
                return await recs.find("studio-a", "flash") is None

            await until(finished, "the collector finished emptying the collection")
            assert await recs.count("studio-a", "flash") == 0
            assert not any(_stored(tmp_path, p) for p in pictures)
            assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201


async def test_what_was_under_way_when_a_collection_was_deleted_never_brings_it_back(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """An upload, a reindex and an emptying pass that each began before the delete (or, for
    the pass, before the name was taken again) finish after it: none writes into the
    deleted collection, and none touches the new one of the same name."""
    pictures = [jpeg(200 + i, (220, 190 + 9 * i)) for i in range(3)]
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        state = gw.app.state.collections
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        await c.added("flash", pictures[:1], "clip")
        recs = await _records(gw)
        before = await recs.get("studio-a", "flash")
        assert before is not None
        # A reindex queued behind the gateway's one running slot.
        await state.reindex._slot.acquire()
        status, _ = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
        assert status == 202

        assert (await c.call("DELETE", "/collections/flash"))[0] == 204
        await state.deleter.settled()
        state.reindex._slot.release()
        await state.reindex.close()  # the job was stopped by the delete; nothing is left running
        assert await recs.find("studio-a", "flash") is None

        # An upload that found the collection before the delete writes after it.
        uploader = Uploader(state.uploads, recs, before, ["clip"], [], lambda tenant, sha256: "")
        (result,) = await uploader.add_all([Input("late.jpg", data=pictures[1])])
        assert result["status"] == "rejected" and "deleted" in result["reason"], result
        assert await recs.find("studio-a", "flash") is None and await recs.count("studio-a", "flash") == 0
        assert not await recs.touch(before, ["clip"])  # a late touch brings nothing back either
        assert await recs.find("studio-a", "flash") is None

        # The name taken again; an emptying pass that started from the old, marked record
        # leaves the new collection alone.
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        (kept,) = await c.added("flash", pictures[2:], "clip")
        assert await state.deleter.empty(replace(before, deleting=True)) == 0
        assert (await c.collection("flash"))["images"] == 1
        assert [r["id"] for r in await c.search(pictures[2], "clip", "flash")][:1] == [kept]
        jobs = (await c.collection("flash"))["index"]
        assert "dinov2" not in jobs, jobs  # the old collection's job record went with it


async def test_an_original_rewritten_moments_ago_is_left_to_the_collector(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    """Deleting an image lets go of its original at once, unless its bytes were (re)written
    within GATEWAY_BLOBS_RELEASE_GRACE_S (an upload of the same picture may be under way):
    then the collector takes them, after its own grace."""
    fresh, old = jpeg(210, (230, 200)), jpeg(211, (240, 200))
    settings = _settings(embed, scraper, site, tmp_path, blobs_release_grace_s=60,
                         blobs_gc_interval_s=0.1, blobs_gc_grace_s=600)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        fresh_id, old_id = await c.added("flash", [fresh, old], "clip")
        _age(tmp_path, old, 7200)  # written two hours ago: past both graces
        for id in (fresh_id, old_id):
            assert (await c.call("DELETE", f"/collections/flash/images/{id}"))[0] == 204
        assert not _stored(tmp_path, old)  # let go at once
        assert _stored(tmp_path, fresh)  # written a moment ago: the collector's
        _age(tmp_path, fresh, 7200)

        async def collected() -> bool:
            return not _stored(tmp_path, fresh)

        await until(collected, "the collector took the original nothing holds")


def _age(tmp: Path, picture: bytes, seconds: float) -> None:
    sha256 = hashlib.sha256(picture).hexdigest()
    then = time.time() - seconds
    os.utime(tmp / "blobs" / sha256[:2] / sha256[2:4] / sha256, (then, then))

"""Deleting a collection: gone for its tenant at once (searches, listings, every route,
its name taken), emptied in the background, and finished by the collector when the
gateway that began it stopped half-way. Real embed and scraper servers, the embedded
gallery store and local blobs in tmp."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest

from search_gateway.collections import CollectionRecords
from tests.search_gateway.collections_support import A, B, CollectionsClient
from tests.search_gateway.collections_support import collection_settings as _settings
from tests.search_gateway.conftest import Site
from tests.search_gateway.gateway_support import RunningGateway, run_gateway
from tests.support.background import BackgroundServer
from tests.support.images import jpeg
from tests.support.polling import until

pytestmark = pytest.mark.asyncio


async def _records(gw: RunningGateway) -> CollectionRecords:
    return CollectionRecords((await gw.app.state.gateway.gallery.link.gallery()).store)


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

        await gw.app.state.gateway.deleter.settled()  # the background emptying
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

"""Records that say what they hold (payload version 2), and a store of version 1 read as it was.

fixtures/records_v1.json is the bookkeeping space as the code of payload version 1 wrote
it (collections, one being deleted, one written before revisions existed, images, a job
in each state, quota entries), with what that code read back. Its payloads are loaded
into a fresh store as they are; today's code must read every record the same, write the
next change in the record layout, and keep refusing a stale compare-and-set.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as qe

from search_gateway.collections import quota, reindex
from search_gateway.collections.records import JOBS, META, RELEASED, RESERVED, CollectionRecords
from search_gateway.gallery.base import IMAGE_VECTOR, GalleryFilter, GalleryPoint, pages
from search_gateway.gallery.edge import EdgeGalleryStore
from search_gateway.gallery.schema import PAYLOAD_VERSION, RECORD, to_payload

pytestmark = pytest.mark.asyncio

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "records_v1.json").read_text())
READ_BACK: dict[str, Any] = FIXTURE["read_back"]


_ISSUE_22 = ("color_scheme", "palette", "palette_shares", "color_error", "placement")
# Results that never rot (issue 23 part 2): a kept thumbnail and link health; read as none / 0.
_ISSUE_23_LINKS = ("thumbnail", "link_checked", "link_state", "link_reason", "link_failures")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _key(job: dict[str, Any]) -> str:
    return json.dumps(job, sort_keys=True)


async def _v1_store(tmp_path: Path) -> EdgeGalleryStore:
    """A fresh store holding the fixture's payloads byte for byte (written past GalleryPoint,
    through the engine: today's to_payload would write today's layout)."""
    store = await EdgeGalleryStore.open(tmp_path / "gallery")
    shard = await store._shard_for_write(META)
    batch = [qe.Point(p["id"], {IMAGE_VECTOR: [1.0]}, p["payload"]) for p in FIXTURE["points"]]
    await shard.call(lambda engine: engine.update(qe.UpdateOperation.upsert_points(batch)))
    return store


async def _all(store: EdgeGalleryStore) -> list[GalleryPoint]:
    return [p async for page in pages(store, META, GalleryFilter()) for p in page]


def test_the_fixture_is_version_1_and_small() -> None:
    assert {p["payload"]["v"] for p in FIXTURE["points"]} == {1}
    assert all(RECORD not in p["payload"] for p in FIXTURE["points"])
    assert (Path(__file__).parent / "fixtures" / "records_v1.json").stat().st_size < 50_000
    assert PAYLOAD_VERSION == 2


async def test_a_version_1_store_reads_back_as_it_was(tmp_path: Path) -> None:
    store = await _v1_store(tmp_path)
    recs = CollectionRecords(store)
    collections, images = [], []
    for tenant in ("studio-a", "studio-b"):
        for name in sorted(await recs.names(tenant)):
            found = await recs.find(tenant, name)
            assert found is not None
            collections.append(_jsonable(asdict(found)))
            read = (await recs.images(tenant, name)).points
            images += [_jsonable({k: v for k, v in asdict(p).items()
                                  if k not in ("vector", "record", *_ISSUE_22, *_ISSUE_23_LINKS)})
                       for p in read]
            assert all(getattr(p, k) in (None, 0) for p in read for k in _ISSUE_23_LINKS)
            # Fields that came after the fixture (issue 22: colour facts, placement) read as none.
            assert all(getattr(p, k) in (None, {}) for p in read for k in _ISSUE_22)
        usage = await recs.usage(tenant)
        assert {"image_count": await recs.image_count(tenant), "bytes": usage.bytes,
                "collections": await recs.count_collections(tenant),
                "live": [c.name for c in await recs.of_tenant(tenant)]} == READ_BACK["tenants"][tenant]
    assert collections == READ_BACK["collections"]
    assert images == READ_BACK["images"]
    points = await _all(store)
    jobs = [_jsonable(asdict(reindex._job(p))) for p in points if p.collection == JOBS]
    assert sorted(jobs, key=_key) == sorted(READ_BACK["jobs"], key=_key)
    entries = sorted([p.collection, p.tenant, p.bytes, _jsonable(quota.written(p))] for p in points
                     if p.collection in (RESERVED, RELEASED))
    assert [[c, t, b, None if c == RELEASED else w] for c, t, b, w in entries] == READ_BACK["quota_entries"]
    assert all(quota.written(p) is not None for p in points if p.collection in (RESERVED, RELEASED))
    # The one being deleted stays so: its name is taken, and nothing brings it back.
    deleting = await recs.deleting()
    assert [(c.tenant, c.name) for c in deleting] == [("studio-a", "old-work")]
    assert await recs.create("studio-a", "old-work") is None
    assert not await recs.touch(deleting[0], ["clip"])
    assert await recs.holds("studio-a", "flash", f"{0:064x}")
    assert not await recs.holds("studio-a", "old-work", "f" * 64)
    await store.close()


async def test_the_next_write_uses_the_record_layout_and_reads_the_same(tmp_path: Path) -> None:
    store = await _v1_store(tmp_path)
    recs = CollectionRecords(store)
    flash = await recs.get("studio-a", "flash")
    legacy = await recs.get("studio-b", "legacy")
    assert flash is not None and legacy is not None and not legacy.revision
    assert await recs.touch(flash, ["siglip"])
    assert await recs.touch(legacy, ["dinov3"])
    stored = await store.retrieve(META, [GalleryPoint("flash", None, "@collections", "studio-a").id])
    payload = to_payload(stored[0])
    assert payload["v"] == 2 and payload[RECORD]["kind"] == "collection" and "engine" not in payload
    assert payload[RECORD]["models"] == ["clip", "dinov3", "siglip"] and payload[RECORD]["deleting"] is False
    after = await recs.get("studio-a", "flash")
    assert after is not None and after.created == flash.created and after.updated > flash.updated
    assert after.models == ("clip", "dinov3", "siglip")
    # A job's next write (a heartbeat) rewrites it in the record layout; it reads the same.
    old_jobs = [p for p in await _all(store) if p.collection == JOBS]
    await store.upsert(META, [reindex._job(p).point() for p in old_jobs])
    new_jobs = [p for p in await _all(store) if p.collection == JOBS]
    assert all(p.record["kind"] == "reindex-job" and not p.title and p.width is None for p in new_jobs)
    assert sorted(map(reindex._job, new_jobs), key=str) == sorted(map(reindex._job, old_jobs), key=str)
    # Deleting writes the record layout too, and the collection stays deleted for every reader.
    await recs.mark_deleting(after)
    gone = await store.retrieve(META, [GalleryPoint("flash", None, "@collections", "studio-a").id])
    assert gone[0].record["deleting"] is True and await recs.get("studio-a", "flash") is None
    assert not await recs.touch(after, ["clip"])
    assert not await recs.holds("studio-a", "flash", f"{0:064x}")
    # The quota still counts images only, whatever layout its entries and records have.
    q = quota.Quota(quota.Limits(images=100, bytes=0))
    before = await recs.image_count("studio-a")
    reservation = await q.reserve(recs, "studio-a", [1000, 2000])
    assert reservation.granted == 2 and await recs.image_count("studio-a") == before + 2
    assert all(p.record["kind"] == "quota-reserved" for p in await store.retrieve(META, reservation.ids))
    await reservation.release()
    await quota.note_released(store, "studio-a", 3000)
    assert await recs.image_count("studio-a") == before
    # The old reservation (version 1, written 2026-11-30) expires by its old stamp; the released
    # bytes (one of version 1, written when the fixture was made, and the new one) by theirs. The
    # released bytes' time to live is far longer than the fixture's age, whenever the test runs.
    assert await quota.sweep(store, reservation_ttl_s=3600, released_ttl_s=10**10) == 1
    assert await quota.sweep(store, reservation_ttl_s=0, released_ttl_s=0) == 2
    await store.close()


async def test_the_compare_and_set_refuses_a_stale_write_across_the_layouts(tmp_path: Path) -> None:
    store = await _v1_store(tmp_path)
    recs = CollectionRecords(store)
    for tenant, name in (("studio-a", "flash"), ("studio-b", "legacy")):  # with a revision, and without
        read = await recs.find(tenant, name)
        assert read is not None
        assert await recs.touch(read, ["siglip"])  # rewritten in the record layout, revision renewed
        current = await recs.find(tenant, name)
        assert current is not None and current.revision != read.revision
        stale = GalleryPoint(name, (1.0,), "@collections", tenant, revision="stale",
                             record={"kind": "collection", "name": name, "created": read.created.isoformat(),
                                     "updated": datetime.now(UTC).isoformat(), "models": [], "deleting": False})
        await store.replace_if(META, stale, read.revision)
        assert await recs.find(tenant, name) == current
        await store.replace_if(META, stale, current.revision)  # over the revision stored: it lands
        landed = await recs.find(tenant, name)
        assert landed is not None and (landed.revision, landed.models, landed.created) == ("stale", (), read.created)
    # A create never overwrites a record of either layout.
    assert await recs.create("studio-b", "flash") is None
    assert await recs.create("studio-a", "flash") is None
    await store.close()

"""The contract every BlobStore keeps, as one abstract test class.

Subclassed once per backend (``test_local_blobs.py``, ``test_s3_blobs.py``), each
subclass providing ``make_store`` (an empty store) and ``backdate`` (make a blob look
written ``seconds`` ago, as only the backend's own side can).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from search_gateway.collections.blobs import (
    BlobNotFound,
    BlobRejected,
    BlobStore,
    collect_garbage,
    put_then_index,
    release,
)


def blob(n: int, size: int = 1000) -> tuple[str, bytes]:
    data = (f"picture {n} ".encode() * (size // 10 + 1))[:size]
    return hashlib.sha256(data).hexdigest(), data


class BlobStoreContract:
    """Not collected itself (no ``Test`` prefix); backends subclass it."""

    async def make_store(self, tmp_path: Path) -> BlobStore:
        raise NotImplementedError

    async def backdate(self, store: BlobStore, sha256: str, seconds: float) -> None:
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        opened = await self.make_store(tmp_path)
        try:
            yield opened
        finally:
            await opened.close()

    async def test_put_then_get_round_trips_the_bytes(self, store: BlobStore) -> None:
        sha, data = blob(1, size=300_000)
        ref = await store.put(sha, data, "image/jpeg")
        assert (ref.sha256, ref.size, ref.content_type) == (sha, len(data), "image/jpeg")
        assert await store.get(sha) == data
        assert await store.exists(sha)
        stat = await store.stat(sha)
        assert stat is not None and stat.size == len(data) and stat.modified.tzinfo is not None

    async def test_empty_blob_round_trips(self, store: BlobStore) -> None:
        sha = hashlib.sha256(b"").hexdigest()
        await store.put(sha, b"", "application/octet-stream")
        assert await store.get(sha) == b""

    async def test_same_hash_twice_is_stored_once(self, store: BlobStore) -> None:
        sha, data = blob(2)
        await store.put(sha, data, "image/png")
        await store.put(sha, data, "image/png")
        assert [e.sha256 async for e in store.entries()] == [sha]
        assert await store.get(sha) == data

    async def test_second_put_makes_an_old_blob_young_again(self, store: BlobStore) -> None:
        # An upload re-using bytes that lost their last reference must not be collected
        # between its put and its point (base.py's consistency design).
        sha, data = blob(3)
        await store.put(sha, data, "image/png")
        await self.backdate(store, sha, 7200)
        old = await store.stat(sha)
        assert old is not None and old.modified < datetime.now(UTC) - timedelta(seconds=3600)
        await store.put(sha, data, "image/png")
        young = await store.stat(sha)
        assert young is not None and young.modified > old.modified + timedelta(seconds=3600)
        result = await collect_garbage(store, _never, older_than_s=3600)
        assert result.deleted == () and await store.exists(sha)

    async def test_bytes_that_do_not_hash_to_the_address_are_refused(self, store: BlobStore) -> None:
        sha, _ = blob(4)
        with pytest.raises(BlobRejected, match="hash to"):
            await store.put(sha, b"something else", "image/png")
        assert not await store.exists(sha)
        assert [e async for e in store.entries()] == []

    @pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 65])
    async def test_malformed_hash_is_refused_with_a_sentence(self, store: BlobStore, bad: str) -> None:
        with pytest.raises(BlobRejected, match="64 lower-case hex digits"):
            await store.get(bad)
        with pytest.raises(BlobRejected, match="64 lower-case hex digits"):
            await store.put(bad, b"x", "image/png")

    async def test_missing_blob_is_not_found(self, store: BlobStore) -> None:
        sha, _ = blob(5)
        with pytest.raises(BlobNotFound, match=sha):
            await store.get(sha)
        assert not await store.exists(sha)
        assert await store.stat(sha) is None

    async def test_delete_removes_and_ignores_unknown(self, store: BlobStore) -> None:
        sha, data = blob(6)
        other, other_data = blob(7)
        await store.put(sha, data, "image/png")
        await store.put(other, other_data, "image/png")
        await store.delete(sha)
        await store.delete(sha)
        assert not await store.exists(sha)
        with pytest.raises(BlobNotFound):
            await store.get(sha)
        assert await store.get(other) == other_data

    async def test_listing_gives_every_blob_with_size_and_time(self, store: BlobStore) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        stored = dict(blob(n, size=100 + n) for n in range(12))
        for sha, data in stored.items():
            await store.put(sha, data, "image/png")
        listed = {e.sha256: e async for e in store.entries()}
        assert set(listed) == set(stored)
        after = datetime.now(UTC) + timedelta(minutes=5)
        for sha, entry in listed.items():
            assert entry.size == len(stored[sha])
            assert before < entry.modified < after

    async def test_list_older_than_splits_at_the_cutoff(self, store: BlobStore) -> None:
        old, old_data = blob(8)
        new, new_data = blob(9)
        await store.put(old, old_data, "image/png")
        await store.put(new, new_data, "image/png")
        await self.backdate(store, old, 7200)
        cutoff = datetime.now(UTC) - timedelta(seconds=3600)
        assert [e.sha256 async for e in store.list_older_than(cutoff)] == [old]

    async def test_gc_keeps_referenced_and_young_and_deletes_the_rest(self, store: BlobStore) -> None:
        referenced_old, unreferenced_old, unreferenced_young = blob(10), blob(11), blob(12)
        for sha, data in (referenced_old, unreferenced_old, unreferenced_young):
            await store.put(sha, data, "image/png")
        await self.backdate(store, referenced_old[0], 7200)
        await self.backdate(store, unreferenced_old[0], 7200)
        asked: list[str] = []

        async def is_referenced(sha: str) -> bool:
            asked.append(sha)
            return sha == referenced_old[0]

        result = await collect_garbage(store, is_referenced, older_than_s=3600)
        assert result.deleted == (unreferenced_old[0],)
        assert result.examined == 2
        assert unreferenced_young[0] not in asked  # young: not even looked up
        assert await store.exists(referenced_old[0])
        assert await store.exists(unreferenced_young[0])
        assert not await store.exists(unreferenced_old[0])

    async def test_gc_past_the_grace_period_deletes_every_unreferenced_blob(self, store: BlobStore) -> None:
        keep, drop = blob(13), blob(14)
        await store.put(*keep, "image/png")
        await store.put(*drop, "image/png")

        async def is_referenced(sha: str) -> bool:
            return sha == keep[0]

        later = datetime.now(UTC) + timedelta(hours=2)
        result = await collect_garbage(store, is_referenced, older_than_s=3600, now=later)
        assert result.deleted == (drop[0],)
        assert [e.sha256 async for e in store.entries()] == [keep[0]]

    async def test_release_deletes_old_unreferenced_bytes_at_once_and_keeps_young_ones(self, store: BlobStore) -> None:
        old, young = blob(15), blob(16)
        await store.put(*old, "image/png")
        await store.put(*young, "image/png")
        await self.backdate(store, old[0], 7200)
        assert await release(store, old[0], _never, older_than_s=600)
        assert not await release(store, young[0], _never, older_than_s=600)
        assert not await store.exists(old[0]) and await store.exists(young[0])

    async def test_put_then_index_stores_bytes_before_the_point(self, store: BlobStore) -> None:
        sha, data = blob(17)
        seen_at_point: list[bool] = []

        async def write_point() -> None:
            seen_at_point.append(await store.exists(sha))

        await put_then_index(store, sha, data, "image/png", write_point)
        assert seen_at_point == [True]

    async def test_failed_point_write_leaves_only_bytes_which_gc_takes(self, store: BlobStore) -> None:
        sha, data = blob(18)

        async def crash() -> None:
            raise RuntimeError("the gallery went away")

        with pytest.raises(RuntimeError):
            await put_then_index(store, sha, data, "image/png", crash)
        assert await store.get(sha) == data  # no point exists, so nothing is orphaned
        later = datetime.now(UTC) + timedelta(hours=2)
        assert (await collect_garbage(store, _never, older_than_s=3600, now=later)).deleted == (sha,)

    async def test_put_then_index_stores_again_bytes_collected_before_the_point_landed(
        self, store: BlobStore
    ) -> None:
        sha, data = blob(19)

        async def raced_by_collector() -> None:
            await store.delete(sha)  # a collector that saw no point yet

        await put_then_index(store, sha, data, "image/png", raced_by_collector)
        assert await store.get(sha) == data


async def _never(sha: str) -> bool:
    return False

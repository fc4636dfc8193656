"""The embedded (qdrant-edge-py) gallery store: the contract, plus what only a local
store must do: keep data across restarts and kill -9, refuse damaged data, and stay
owned by one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from search_gateway.gallery import GalleryCorrupt, GalleryUnavailable, open_store
from search_gateway.gallery.edge import SPACE_MARKER, STORE_MARKER, EdgeGalleryStore
from tests.search_gateway.gallery.contract import SPACE, GalleryStoreContract, sample_point, unit

REPO = Path(__file__).resolve().parents[3]


class TestEdgeStore(GalleryStoreContract):
    # qdrant-edge 0.9 has RecommendBestScore and FeedbackNaive, no average_vector strategy.
    UNSUPPORTED = frozenset({"average_vector"})

    async def make_store(self, tmp_path: Path) -> EdgeGalleryStore:
        return await EdgeGalleryStore.open(tmp_path / "gallery")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


async def test_reopen_after_close_keeps_data(tmp_path: Path) -> None:
    store = await open_store(path=tmp_path / "g")
    await store.upsert(SPACE, [sample_point(n) for n in range(20)])
    await store.close()
    store = await open_store(path=tmp_path / "g")
    try:
        assert await store.count(SPACE) == 20
        [back] = await store.retrieve(SPACE, [sample_point(7).id])
        assert back.urls == sample_point(7).urls
        hits = await store.search(SPACE, unit(7), limit=1)
        assert hits[0].point.content_hash == "sha256-0007"
    finally:
        await store.close()


async def _filled(folder: Path) -> Path:
    store = await EdgeGalleryStore.open(folder)
    await store.upsert(SPACE, [sample_point(n) for n in range(5)])
    await store.close()
    return folder / SPACE.name


async def test_corrupt_segment_is_refused_naming_the_path_and_left_untouched(tmp_path: Path) -> None:
    shard = await _filled(tmp_path / "g")
    [state] = list((shard / "segments").glob("*/segment.json"))
    state.write_text("not json at all")
    before = _tree(tmp_path / "g")
    with pytest.raises(GalleryCorrupt) as caught:
        await EdgeGalleryStore.open(tmp_path / "g")
    message = str(caught.value)
    assert str(shard) in message and "Nothing was changed" in message and "move it aside" in message
    assert _tree(tmp_path / "g") == before


async def test_store_from_an_incompatible_version_is_refused(tmp_path: Path) -> None:
    await _filled(tmp_path / "g")
    (tmp_path / "g" / STORE_MARKER).write_text(json.dumps({"format": 99}))
    with pytest.raises(GalleryCorrupt, match=r"format 99.*reads format 1"):
        await EdgeGalleryStore.open(tmp_path / "g")
    [version] = list((tmp_path / "g" / SPACE.name / "segments").glob("*/version.info"))
    (tmp_path / "g" / STORE_MARKER).write_text(json.dumps({"format": 1}))
    version.write_text("99.0.0")  # the engine's own segment format, from a newer engine
    with pytest.raises(GalleryCorrupt, match=str(tmp_path / "g" / SPACE.name)):
        await EdgeGalleryStore.open(tmp_path / "g")


async def test_foreign_folder_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GalleryCorrupt, match="not a gallery store"):
        await EdgeGalleryStore.open(tmp_path / "mine")
    assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]


async def test_space_marker_disagreeing_with_its_data_is_refused(tmp_path: Path) -> None:
    shard = await _filled(tmp_path / "g")
    marker = json.loads((shard / SPACE_MARKER).read_text())
    other = shard.parent / "clip-random-clip-seed0-d32-renamed"
    shard.rename(other)
    (other / SPACE_MARKER).write_text(json.dumps({**marker, "dimension": 32}))
    with pytest.raises(GalleryCorrupt, match="renamed"):
        await EdgeGalleryStore.open(tmp_path / "g")


async def test_second_opener_is_told_the_store_is_owned(tmp_path: Path) -> None:
    store = await EdgeGalleryStore.open(tmp_path / "g")
    await store.upsert(SPACE, [sample_point(1)])
    try:
        with pytest.raises(GalleryUnavailable, match="open in another process"):
            await EdgeGalleryStore.open(tmp_path / "g")
    finally:
        await store.close()


async def test_optimize_runs_in_a_child_and_the_space_answers_after(tmp_path: Path) -> None:
    store = await EdgeGalleryStore.open(tmp_path / "g")
    try:
        await store.upsert(SPACE, [sample_point(n) for n in range(300)])
        before = [h.point.content_hash for h in await store.search(SPACE, unit(9), limit=5)]
        await store.optimize(SPACE)
        assert await store.count(SPACE) == 300
        assert [h.point.content_hash for h in await store.search(SPACE, unit(9), limit=5)] == before
        await store.upsert(SPACE, [sample_point(300)])
        assert await store.count(SPACE) == 301
    finally:
        await store.close()


@pytest.mark.slow
async def test_kill_9_while_upserting_loses_no_acknowledged_point(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.search_gateway.gallery.upsert_child", str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    acked = -1
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked = int(line.split()[2])
            if acked >= 400:  # many batches in, and the next one is already in flight
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert acked >= 400, child.stderr.read() if child.stderr else ""
    store = await EdgeGalleryStore.open(folder)
    try:
        stored = await store.count(SPACE)
        assert stored >= acked + 1
        wanted = [sample_point(n) for n in range(stored)]
        # Everything stored (acknowledged or not) is whole: vector and every field.
        back = {p.content_hash: p for p in await store.retrieve(SPACE, [p.id for p in wanted])}
        assert len(back) == stored
        for point in wanted:
            got = back[point.content_hash]
            assert got.vector is not None and len(got.vector) == SPACE.dimension
            assert got == type(point)(**{**point.__dict__, "vector": got.vector})
    finally:
        await store.close()

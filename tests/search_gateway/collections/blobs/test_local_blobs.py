"""The folder blob store: the contract, plus what only files must do: survive kill -9
mid-write without a partial file under a final name, and refuse unusable folders."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from search_gateway.collections.blobs import BlobError, BlobStore, open_blob_store
from search_gateway.collections.blobs.local import LocalBlobStore
from tests.search_gateway.collections.blobs.contract import BlobStoreContract, blob

REPO = Path(__file__).resolve().parents[4]


class TestLocalBlobStore(BlobStoreContract):
    async def make_store(self, tmp_path: Path) -> BlobStore:
        return await LocalBlobStore.open(tmp_path / "blobs")

    async def backdate(self, store: BlobStore, sha256: str, seconds: float) -> None:
        assert isinstance(store, LocalBlobStore)
        then = time.time() - seconds
        os.utime(store.path_of(sha256), (then, then))


async def test_blobs_are_fanned_out_by_hash_prefix(tmp_path: Path) -> None:
    store = await LocalBlobStore.open(tmp_path)
    sha, data = blob(1)
    await store.put(sha, data, "image/png")
    assert (tmp_path / sha[:2] / sha[2:4] / sha).read_bytes() == data


@pytest.mark.slow
async def test_kill_9_during_writes_leaves_no_partial_blob_under_a_final_name(tmp_path: Path) -> None:
    folder = tmp_path / "blobs"
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("writer_child.py")), str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        for _ in range(6):  # a few whole blobs, then kill it while it writes the next
            assert child.stdout.readline(), "the writer died before it wrote anything"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = await LocalBlobStore.open(folder)
    listed = [entry async for entry in store.entries()]
    assert len(listed) >= 6
    for entry in listed:
        data = await store.get(entry.sha256)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert len(data) == entry.size
    # Whatever else is on disk is a temporary file, which a sweep past its age removes.
    final_names = {e.sha256 for e in listed}
    others = [p for p in folder.rglob("*") if p.is_file() and p.name not in final_names]
    assert all(p.name.startswith(".") and p.name.endswith(".partial") for p in others), others
    removed = await store.sweep_partial(datetime.now(UTC) + timedelta(seconds=1))
    assert removed == len(others)
    assert {p.name for p in folder.rglob("*") if p.is_file()} == final_names


async def test_sweep_keeps_a_partial_write_younger_than_the_cutoff(tmp_path: Path) -> None:
    store = await LocalBlobStore.open(tmp_path)
    sha, data = blob(2)
    partial = tmp_path / sha[:2] / sha[2:4] / f".{sha}.x1.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:10])
    assert await store.sweep_partial(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert partial.exists()
    assert [e async for e in store.entries()] == []


async def test_a_file_where_the_folder_should_be_is_refused_naming_it(tmp_path: Path) -> None:
    squatter = tmp_path / "blobs"
    squatter.write_text("not a folder")
    with pytest.raises(BlobError, match=str(squatter)):
        await open_blob_store(path=squatter)


async def test_factory_wants_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await open_blob_store()
    with pytest.raises(ValueError, match="exactly one"):
        await open_blob_store(path=tmp_path, url="http://127.0.0.1:9")
    assert isinstance(await open_blob_store(path=tmp_path / "b"), LocalBlobStore)

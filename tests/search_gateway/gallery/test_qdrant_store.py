"""The qdrant-client gallery store: the same contract against qdrant-client's in-memory
local mode, and against a real Qdrant server when QDRANT_URL names one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from search_gateway.gallery import GalleryUnavailable, open_store
from search_gateway.gallery.qdrant import MEMORY, QdrantGalleryStore
from tests.search_gateway.gallery.contract import GalleryStoreContract

QDRANT_URL = os.environ.get("QDRANT_URL", "")


class TestQdrantLocalStore(GalleryStoreContract):
    async def make_store(self, tmp_path: Path) -> QdrantGalleryStore:
        return await QdrantGalleryStore.open(MEMORY)


class _ServerStore(QdrantGalleryStore):
    """Each test gets its own collections (a fresh prefix) and drops them when closed."""

    async def close(self) -> None:
        try:
            listing = await self._client.get_collections()
            for found in listing.collections:
                if found.name.startswith(self._prefix):
                    await self._client.delete_collection(found.name)
        finally:
            await super().close()


@pytest.mark.skipif(not QDRANT_URL, reason="set QDRANT_URL to a Qdrant server to run the contract against it")
class TestQdrantServerStore(GalleryStoreContract):
    async def make_store(self, tmp_path: Path) -> QdrantGalleryStore:
        store = await _ServerStore.open(QDRANT_URL, prefix=f"test-{uuid.uuid4().hex[:12]}-")
        assert isinstance(store, _ServerStore)
        return store


async def test_unreachable_server_fails_at_open_naming_the_url() -> None:
    with pytest.raises(GalleryUnavailable, match=r"http://127\.0\.0\.1:9 cannot be reached"):
        await open_store(url="http://127.0.0.1:9")


async def test_factory_wants_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await open_store()
    with pytest.raises(ValueError, match="exactly one"):
        await open_store(path=tmp_path, url=MEMORY)

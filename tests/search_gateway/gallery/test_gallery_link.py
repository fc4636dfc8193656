"""The gateway's handle on the gallery store at shutdown: once closed it is never opened
again, so a background task still running (a reindex heartbeat, the collector) cannot
reopen the store and keep its lock from the next process. The embedded engine, in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_gateway.gallery.base import GalleryStore, GalleryUnavailable
from search_gateway.gallery.edge import EdgeGalleryStore
from search_gateway.gallery.link import GalleryLink
from tests.search_gateway.gallery.contract import SPACE, sample_point

pytestmark = pytest.mark.asyncio


async def test_a_closed_link_never_reopens_the_store(tmp_path: Path) -> None:
    opened: list[GalleryStore] = []

    async def opener() -> GalleryStore:
        store = await EdgeGalleryStore.open(tmp_path / "gallery")
        opened.append(store)
        return store

    link = GalleryLink(opener, str(tmp_path / "gallery"), retry_s=0)
    await link.start()
    await (await link.gallery()).store.upsert(SPACE, [sample_point(1)])
    await link.close()
    with pytest.raises(GalleryUnavailable, match="closed"):
        await link.gallery()  # a task late at shutdown: no second open
    assert len(opened) == 1
    # The folder's lock went with the close: the next process (here, another store) opens it.
    again = await EdgeGalleryStore.open(tmp_path / "gallery")
    try:
        assert await again.count(SPACE) == 1
    finally:
        await again.close()

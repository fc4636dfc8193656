"""Open the gallery store the settings ask for: a folder (embedded) or a Qdrant URL."""

from __future__ import annotations

import os

from search_gateway.gallery.base import GalleryStore


async def open_store(
    *,
    path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
    hnsw_ef: int | None = 128,
    exact: bool = False,
) -> GalleryStore:
    """Exactly one of ``path`` (embedded qdrant-edge store) or ``url`` (Qdrant server or
    cluster; ``":memory:"`` for qdrant-client's local mode in tests).

    Raises ``GalleryCorrupt`` for unreadable data and ``GalleryUnavailable`` for an
    unreachable server or a store held by another process (the gateway starts without
    the gallery then, and tries again later: search_gateway/gallery/link.py).
    """
    if (path is None) == (url is None):
        raise ValueError("open the gallery store with exactly one of a folder path or a Qdrant URL")
    if url is not None:
        from search_gateway.gallery.qdrant import QdrantGalleryStore

        server = await QdrantGalleryStore.open(url, api_key=api_key, hnsw_ef=hnsw_ef)
        server.exact = exact
        return server
    assert path is not None
    # Imported here so a deployment on a Qdrant server never loads the embedded engine.
    from search_gateway.gallery.edge import EdgeGalleryStore

    return await EdgeGalleryStore.open(path, hnsw_ef=hnsw_ef, exact=exact)

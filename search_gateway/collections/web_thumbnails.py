"""Thumbnails kept for web points, so a result whose source URL is gone still shows a picture.

When the gallery's background writer remembers a web image, a 256 px WebP (quality 75, a
few KB: docs/deployment.md has the measured median) is made from the bytes the search
already downloaded (no second download, off the search's path) and put in the thumbnail
blob store: a folder of its own (``GATEWAY_THUMBNAILS_PATH``, ``var/thumbnails``) or, with an
S3-compatible blob store, the same bucket under ``GATEWAY_THUMBNAILS_PREFIX``. Never the
originals' namespace: a web picture's thumbnail is public like the web point, an uploaded
original is its tenant's.

Addressed by the thumbnail's own SHA-256 (the blob store checks every put against it), which
the point records (``GalleryPoint.thumbnail``). One per picture: a point that already keeps
one is not given another, and the same bytes make the same WebP, so the same picture in two
model spaces is one blob (``put`` is idempotent). Bytes first, then the point: the put lands
before the point that names it is written, and renews the blob's age, so the collector's
grace keeps it meanwhile. A thumbnail is held by any web point that names it; the blob
collector releases the others (``held``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

from search_gateway.collections.blobs.base import BlobError, BlobStore
from search_gateway.errors import GatewayError
from search_gateway.fetch.images import content_hash, webp_thumbnail
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, VectorSpace
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.spaces import WEB
from search_gateway.metrics import Metrics

log = logging.getLogger(__name__)

WEBP = "image/webp"
Spaces = Callable[[], Awaitable[Sequence[VectorSpace]]]


class WebThumbnails:
    """Makes and keeps web points' thumbnails; the writer's hook and the checker's backfill."""

    def __init__(self, blobs: BlobStore, link: GalleryLink, metrics: Metrics, *, max_pixels: int) -> None:
        self.blobs = blobs
        self.link = link
        self.metrics = metrics
        self.max_pixels = max_pixels

    async def keep(self, data: bytes) -> str | None:
        """The thumbnail of ``data`` put in the store; its hash, or None when it cannot be made or kept."""
        try:
            webp = await asyncio.to_thread(webp_thumbnail, data, max_pixels=self.max_pixels)
        except (GatewayError, OSError, ValueError) as exc:
            log.info("web thumbnail not made: %s", exc)
            return None
        sha256 = content_hash(webp)
        try:
            # Counted only when new: a put of stored bytes (the same picture in another space,
            # or a twin file) writes nothing but its age.
            fresh = not await self.blobs.exists(sha256)
            await self.blobs.put(sha256, webp, WEBP)
        except BlobError as exc:
            log.warning("web thumbnail not kept (the thumbnail store failed): %s", exc)
            return None
        if fresh:
            self.metrics.thumbnail_bytes.inc(len(webp))
        return sha256

    async def __call__(self, space: VectorSpace, points: Sequence[GalleryPoint],
                       pixels: Mapping[str, bytes]) -> list[GalleryPoint]:
        """The writer's hook: ``points`` with a thumbnail each, made from ``pixels`` for those
        whose stored point keeps none yet."""
        web = [p for p in points if p.collection == WEB and p.tenant is None and p.content_hash in pixels]
        if not web:
            return list(points)
        try:
            stored = await (await self.link.gallery()).store.retrieve(space, [p.id for p in web])
        except GalleryError:
            stored = []  # the write that follows will say so; a thumbnail too many is harmless
        kept = {p.id for p in stored if p.thumbnail}
        made: dict[str, str | None] = {}
        for p in web:
            if p.id not in kept and p.content_hash not in made:
                made[p.content_hash] = await self.keep(pixels[p.content_hash])
        return [replace(p, thumbnail=made[p.content_hash]) if made.get(p.content_hash) else p for p in points]

    async def get(self, sha256: str) -> bytes:
        return await self.blobs.get(sha256)


def held(link: GalleryLink, spaces: Spaces) -> Callable[[str], Awaitable[bool]]:
    """The collector's reachability of a thumbnail: held by any web point (of the spaces
    served now) that names it. Asked only when the spaces are known (``collect``)."""

    async def is_held(sha256: str) -> bool:
        store = (await link.gallery()).store
        for space in await spaces():
            if await store.count(space, GalleryFilter(collections=(WEB,), thumbnails=(sha256,))):
                return True
        return False

    return is_held

"""Colour facts for web points written before they existed: the reindex's path for ``web``.

Web points have no original in the blob store, so each is downloaded again from the URL it
was last seen at, through the SSRF-guarded downloader (fetch/downloader.py), decoded once
(fetch/images.prepare: the colour facts come with it) and written back with its vector
unchanged (re-embedding would give the same vector: the space is the same weights).

Resumable by construction: the walk asks the store for the web points with neither colour
facts nor ``color_error`` (GalleryFilter.colour_missing), so a job stopped half way and asked
again starts with what is left. A point whose URL is dead (the download fails, or the file
is no longer an image) or now serves another picture (its content hash differs) is written
with ``color_error`` saying why and counted as ``skipped``: it stays without colour, the
colour filter leaves it out, and no later job tries it again (a search that finds the
picture again at a live URL brings its colour then).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from search_gateway.errors import GatewayError
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits, prepare_in_thread
from search_gateway.gallery.base import GalleryFilter, GalleryPoint, VectorSpace
from search_gateway.gallery.gallery import Gallery
from search_gateway.gallery.spaces import WEB

# Points read (and downloaded, this many at once) per step; progress is recorded after each.
PAGE = 32
_AT_ONCE = 8
MISSING = GalleryFilter(collections=(WEB,), colour_missing=True)


@dataclass(frozen=True)
class Step:
    done: int  # points handled in this step (with colour or with color_error)
    skipped: int  # of those, left without colour (dead URL, changed picture, not an image)
    ids: frozenset[str] = frozenset()  # the points handled: a walk that meets them again is stuck


async def left(gallery: Gallery, space: VectorSpace) -> int:
    """How many web points of ``space`` have no colour facts and no recorded failure."""
    return await gallery.store.count(space, MISSING)


async def step(gallery: Gallery, space: VectorSpace, downloader: Downloader, limits: ImageLimits,
               timeout_s: float) -> Step:
    """One page of web points without colour, downloaded again and written back; done=0: none left."""
    page = await gallery.store.scroll(space, limit=PAGE, filter=MISSING)
    if not page.points:
        return Step(0, 0)
    points = [p for p in await gallery.store.retrieve(space, [p.id for p in page.points]) if p.vector is not None]
    gate = asyncio.Semaphore(_AT_ONCE)

    async def one(point: GalleryPoint) -> GalleryPoint:
        async with gate:
            return await _coloured(point, downloader, limits, timeout_s)

    written = await asyncio.gather(*(one(p) for p in points))
    await gallery.remember(space, written)
    return Step(len(written), sum(1 for p in written if p.color_scheme is None), frozenset(p.id for p in written))


async def _coloured(point: GalleryPoint, downloader: Downloader, limits: ImageLimits,
                    timeout_s: float) -> GalleryPoint:
    """The point with its colour facts, or with ``color_error`` saying why it has none."""
    if not point.urls:
        return replace(point, color_error="no_url")
    try:
        data = await downloader.fetch(point.urls[-1], timeout=timeout_s)  # the latest sighting: likeliest alive
        image = await prepare_in_thread(data, limits, "web image", full_check=False)
    except GatewayError as exc:
        return replace(point, color_error=f"dead_url: {getattr(exc, 'reason', exc.code)}")
    if image.sha256 != point.content_hash:
        return replace(point, color_error="url_changed: it serves another picture now")
    if image.colour is None:
        return replace(point, color_error="unreadable: its pixels could not be decoded")
    facts = image.colour
    return replace(point, color_scheme=facts.scheme, palette=facts.palette, palette_shares=facts.shares)


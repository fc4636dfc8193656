"""Patch tokens for web points written before they were stored (issue 23): the reindex's
path for ``web``, after its colour backfill (collections/web_colour.py).

Web points have no original in the blob store, so each is downloaded again from the URL it
was last seen at, through the SSRF-guarded downloader, decoded (fetch/images.prepare: the
same bytes a search sends the embed server), checked to be the same picture (content hash)
and given its tokens (gallery/patch_tokens.py ``PatchWriter``: one ``EmbedPatches`` each).

Resumable by construction: the walk goes through the web points in id order, a page at a
time, and a point whose tokens are stored already is passed over without a download, so a
job stopped half way and asked again does again only what was left (its walk over the done
part costs one read by id per page). A point whose URL is dead or serves another picture
now is counted ``skipped`` and stays without tokens: searches keep its global score (and
say so), and a later search that finds the picture again at a live URL stores them then.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from search_gateway.errors import GatewayError
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits, prepare_in_thread
from search_gateway.gallery.base import GalleryFilter, GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.patch_tokens import PatchWriter, TokenStore
from search_gateway.gallery.spaces import WEB

# Points read (and downloaded, this many at once) per step; progress is recorded after each.
PAGE = 32
_AT_ONCE = 8
WEB_POINTS = GalleryFilter(collections=(WEB,))


@dataclass(frozen=True)
class Step:
    seen: int  # web points walked in this step (with tokens before, given them now, or skipped)
    stored: int  # of those, given tokens now
    skipped: int  # of those, left without (dead URL, changed picture, not an image, embed refused)
    next: str | None  # where the next step starts; None: the walk is over


async def step(store: GalleryStore, space: VectorSpace, start: str | None, patches: PatchWriter,
               downloader: Downloader, limits: ImageLimits, timeout_s: float, *, page_size: int = PAGE) -> Step:
    """One page of the walk from ``start``: the points without tokens get them."""
    page = await store.scroll(space, limit=page_size, filter=WEB_POINTS, start=start)
    points = [p for p in page.points if not p.record]
    have = await TokenStore(store, patches.compaction).have(space, [p.id for p in points])
    todo = [p for p in points if p.id not in have]
    gate = asyncio.Semaphore(_AT_ONCE)

    async def one(point: GalleryPoint) -> tuple[GalleryPoint, bytes | None]:
        async with gate:
            return point, await _embed_bytes(point, downloader, limits, timeout_s)

    fetched = [(p, data) for p, data in await asyncio.gather(*(one(p) for p in todo)) if data is not None]
    if fetched:
        await patches(space, [p for p, _ in fetched], {p.content_hash: data for p, data in fetched})
    stored = len(await TokenStore(store, patches.compaction).have(space, [p.id for p, _ in fetched]))
    return Step(len(page.points), stored, len(todo) - stored, page.next)


async def _embed_bytes(point: GalleryPoint, downloader: Downloader, limits: ImageLimits,
                       timeout_s: float) -> bytes | None:
    """The bytes a search would send the embed server for this picture; None when it is gone."""
    if not point.urls:
        return None
    try:
        data = await downloader.fetch(point.urls[-1], timeout=timeout_s)  # the latest sighting: likeliest alive
        image = await prepare_in_thread(data, limits, "web image", full_check=False)
    except GatewayError:
        return None
    return image.embed_bytes if image.sha256 == point.content_hash else None

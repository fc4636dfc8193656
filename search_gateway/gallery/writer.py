"""The gallery's background writer: every image a web search embedded is remembered,
off the search's critical path.

A search hands over its sightings and never waits. The queue is bounded (points
waiting, not jobs), so a slow or unreachable store costs memory up to a limit and
then drops sightings (counted): the search's own results are never affected, and a
dropped image is simply remembered the next time a search finds it. A store that is
unavailable is retried with doubling back-off a few times before the batch is dropped.
``written`` counts points the store acknowledged (durable in its write-ahead log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from search_gateway.gallery.base import GalleryPoint, GalleryUnavailable, VectorSpace
from search_gateway.gallery.link import GalleryLink
from search_gateway.metrics import Metrics

log = logging.getLogger(__name__)

# Points per store call: one call holds the embedded engine's GIL for a few ms per 100.
_BATCH = 128

Tagger = Callable[[VectorSpace, Sequence[GalleryPoint]], Awaitable[Sequence[GalleryPoint]]]
# Keeps a thumbnail of each point from the bytes the search downloaded (content hash -> bytes),
# and gives the points back with ``thumbnail`` set (collections/web_thumbnails.py).
Thumbnailer = Callable[[VectorSpace, Sequence[GalleryPoint], Mapping[str, bytes]], Awaitable[Sequence[GalleryPoint]]]
# Issue 23: stores the compact patch tokens of points just remembered, from the image bytes
# the search already had (by content hash); gallery/patch_tokens.py, wired in wiring.py.
Patcher = Callable[[VectorSpace, Sequence[GalleryPoint], Mapping[str, bytes]], Awaitable[None]]
# The downloaded bytes waiting in the queue for their thumbnails and patch tokens, at most:
# past it sightings are queued without them (the point is remembered; the link checker makes
# its thumbnail when it next downloads the URL, the reindex's backfill its tokens,
# collections/token_backfill.py). 5,000 points of ~100 KB would otherwise hold 500 MB.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Sightings:
    space: VectorSpace
    points: tuple[GalleryPoint, ...]
    # The bytes downloaded by the search, by content hash: the thumbnails and the patch tokens
    # are made from them (a point without is stored without).
    images: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def image_bytes(self) -> int:
        return sum(len(b) for b in self.images.values())


class GalleryWriter:
    def __init__(self, link: GalleryLink, metrics: Metrics, *, max_pending: int, retry_s: float,
                 attempts: int = 4, tagger: Tagger | None = None, thumbnailer: Thumbnailer | None = None,
                 patcher: Patcher | None = None) -> None:
        self._link = link
        self._metrics = metrics
        self._max_pending = max_pending
        self._retry_s = retry_s
        self._attempts = attempts
        self._tagger = tagger
        # Public: wiring.py sets it once the thumbnail store is open (after the writer starts).
        self.thumbnailer = thumbnailer
        self._patcher = patcher
        # Bytes of the images queued for their thumbnails and tokens, at most MAX_IMAGE_BYTES.
        self.pending_image_bytes = 0
        self._queue: asyncio.Queue[Sightings] = asyncio.Queue()
        self.pending = 0
        self.written = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        metrics.gallery_pending.set_function(lambda: self.pending)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def submit(self, sightings: Sightings) -> bool:
        """Queue for writing; False (and counted as dropped) when the queue is full."""
        n = len(sightings.points)
        if not n:
            return True
        if self.pending + n > self._max_pending:
            self._drop(n, "the write queue is full")
            return False
        if self.pending_image_bytes + sightings.image_bytes > MAX_IMAGE_BYTES:  # the points still go
            sightings = Sightings(sightings.space, sightings.points)
        self.pending += n
        self.pending_image_bytes += sightings.image_bytes
        self._queue.put_nowait(sightings)
        return True

    async def drained(self) -> None:
        """Until every point queued so far is written or dropped (tests, shutdown)."""
        await self._queue.join()

    async def close(self, grace_s: float) -> None:
        """Write what is queued within ``grace_s``, then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), grace_s)
        except TimeoutError:
            log.warning("gallery writer stopped with %d points not written", self.pending)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        self._metrics.gallery_writes.labels("dropped").inc(n)
        log.warning("gallery: %d sightings not remembered: %s", n, why)

    def _next_batch(self, first: Sightings) -> tuple[Sightings, int, int]:
        # Sightings of the same space queued meanwhile go in the same store call.
        points, taken, images, held = list(first.points), 1, dict(first.images), first.image_bytes
        while len(points) < _BATCH and not self._queue.empty():
            nxt = self._queue._queue[0]  # type: ignore[attr-defined]  # peek: asyncio.Queue has no API for it
            if nxt.space != first.space:
                break
            got = self._queue.get_nowait()
            points.extend(got.points)
            images.update(got.images)
            held += got.image_bytes
            taken += 1
        return Sightings(first.space, tuple(points), images), taken, held

    async def _run(self) -> None:
        while True:
            batch, taken, held = self._next_batch(await self._queue.get())
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a bad point must not stop the writer
                log.exception("gallery writer failed on %d points", len(batch.points))
                self._drop(len(batch.points), f"{type(exc).__name__}: {exc}")
            finally:
                self.pending -= len(batch.points)
                self.pending_image_bytes -= held
                for _ in range(taken):
                    self._queue.task_done()

    async def _write(self, batch: Sightings) -> None:
        points: Sequence[GalleryPoint] = batch.points
        if self.thumbnailer is not None and batch.images:
            # Bytes first, then the point (collections/blobs/base.py): a thumbnail is put before
            # the point that names it is written.
            try:
                points = await self.thumbnailer(batch.space, points, batch.images)
            except Exception as exc:  # remembered without a thumbnail beats not remembered
                log.info("gallery: thumbnails not kept: %s: %s", type(exc).__name__, exc)
        if self._tagger is not None:
            try:
                points = await self._tagger(batch.space, points)
            except Exception as exc:  # untagged is better than unremembered
                log.info("gallery: machine tags not scored: %s: %s", type(exc).__name__, exc)
        for attempt in range(self._attempts):
            try:
                gallery = await self._link.gallery()
                await gallery.remember(batch.space, points)
            except GalleryUnavailable as exc:
                self._link.failed(exc)
                if attempt + 1 == self._attempts:
                    self._drop(len(points), str(exc))
                    return
                self._metrics.gallery_writes.labels("retried").inc(len(points))
                await asyncio.sleep(self._retry_s * 2**attempt)
                continue
            self._link.answered()
            self.written += len(points)
            self._metrics.gallery_writes.labels("written").inc(len(points))
            await self._patch(batch.space, points, batch.images)
            return

    async def _patch(self, space: VectorSpace, points: Sequence[GalleryPoint], images: Mapping[str, bytes]) -> None:
        """The points' patch tokens, after the points themselves: a point without tokens is still
        found (it keeps its global score in a re-ranked search) and the backfill adds them later."""
        if self._patcher is None or not images:
            return
        try:
            await self._patcher(space, points, images)
        except Exception as exc:
            log.info("gallery: patch tokens not stored: %s: %s", type(exc).__name__, exc)

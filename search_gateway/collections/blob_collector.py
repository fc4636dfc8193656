"""Blob garbage collection on a schedule: every ``GATEWAY_BLOBS_GC_INTERVAL_S`` the gateway
deletes the originals no collection record holds and that are older than
``GATEWAY_BLOBS_GC_GRACE_S`` (blobs/gc.py does the work; blobs/base.py the design).

"Referenced" means a collection image record (any tenant) names the hash: a record is
written last by an upload (after the bytes and the points), so bytes without one are an
upload that never finished or a picture deleted from its last collection. A model-space
point without a record is itself left over from such an upload: after the bytes, each
run sweeps those points too, with the same grace (point_sweep.py); should its bytes go
first, the search hides it meanwhile (search/gallery_source.py checks private results'
originals).

Several gateway replicas on one Qdrant server and one bucket each run this loop, and
nothing makes one of them the collector: that is safe, because a delete of a blob that
is already gone is a no-op, each delete re-checks the reference and the age right
before it, and the grace period protects an upload in progress on any replica (its put
renewed the blob's age). Two replicas only repeat a listing; no lock is worth that. The
point sweep is safe the same way (its docstring says how).

Web points' thumbnails (web_thumbnails.py), in a store of their own, are collected in the
same run the same way: a thumbnail is held by any web point, of a space served now, that
names it; one no point holds and older than the grace is deleted. A run that cannot learn the
served spaces (the embed server down) collects no thumbnail: an empty list must not read as
"held by nothing". A thumbnail held only by points of weights no longer served goes too
(those points are not searched; should they be, their link falls back to the original URL).

Each run first finishes emptying deleted collections that a stopped gateway left marked
``deleting`` (collections/deletion.py), so that their originals are let go in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from search_gateway.collections import quota
from search_gateway.collections.blobs.base import BlobError, BlobStore
from search_gateway.collections.blobs.gc import Collected, collect_garbage
from search_gateway.collections.deletion import CollectionDeleter
from search_gateway.collections.point_sweep import PointSweep
from search_gateway.collections.records import CollectionRecords
from search_gateway.collections.web_thumbnails import Spaces, held
from search_gateway.errors import GatewayError
from search_gateway.gallery.base import GalleryError, VectorSpace
from search_gateway.gallery.link import GalleryLink
from search_gateway.metrics import Metrics

log = logging.getLogger(__name__)

# Seconds after the start before half-deleted collections are looked for.
_FIRST_RESUME_S = 5.0


class BlobCollector:
    """The gateway's background collector; ``start`` it once, ``close`` it on shutdown."""

    def __init__(self, link: GalleryLink, blobs: BlobStore, metrics: Metrics, *, interval_s: float,
                 grace_s: float, sweep: PointSweep | None = None, deleter: CollectionDeleter | None = None,
                 reservation_ttl_s: float = 900.0, thumbnails: BlobStore | None = None,
                 spaces: Spaces | None = None) -> None:
        self.link = link
        self.blobs = blobs
        self.sweep = sweep
        self.deleter = deleter
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.reservation_ttl_s = reservation_ttl_s
        # Web points' thumbnails and the spaces whose points hold them (both or neither).
        self.thumbnails = thumbnails
        self.spaces = spaces
        self._task: asyncio.Task[None] | None = None
        # Registered on the app's own registry (one per app, as metrics.py does).
        self.collected = Counter("gateway_blobs_collected_total",
                                 "Originals deleted by the blob collector (deleted), leftovers of interrupted "
                                 "writes swept (partial), web thumbnails no point holds (thumbnail).", ("kind",),
                                 registry=metrics.registry)
        self.runs = Counter("gateway_blobs_gc_runs_total", "Blob collections run, by result (ok, failed).",
                            ("result",), registry=metrics.registry)

    async def collect_once(self) -> Collected:
        store = (await self.link.gallery()).store
        done = await collect_garbage(self.blobs, CollectionRecords(store).referenced, self.grace_s)
        self.collected.labels("deleted").inc(len(done.deleted))
        self.collected.labels("partial").inc(done.partial_removed)
        if done.deleted or done.partial_removed:
            log.info("blob collector: deleted %d unreferenced originals (%s), %d partial writes; examined %d",
                     len(done.deleted), ", ".join(h[:12] for h in done.deleted[:20]), done.partial_removed,
                     done.examined)
        return done

    async def collect_thumbnails(self) -> Collected | None:
        """Thumbnails no web point holds, past the grace; None when the spaces are not known."""
        if self.thumbnails is None or self.spaces is None:
            return None
        spaces = list(await self.spaces())
        if not spaces:
            return None

        async def listed() -> list[VectorSpace]:
            return spaces

        done = await collect_garbage(self.thumbnails, held(self.link, listed), self.grace_s)
        self.collected.labels("thumbnail").inc(len(done.deleted))
        if done.deleted:
            log.info("blob collector: deleted %d thumbnails no web point holds; examined %d",
                     len(done.deleted), done.examined)
        return done

    async def sweep_quota(self) -> int:
        """Reservations of uploads that died, and released bytes past the grace (quota.py)."""
        store = (await self.link.gallery()).store
        return await quota.sweep(store, reservation_ttl_s=self.reservation_ttl_s, released_ttl_s=self.grace_s)

    async def _step(self, what: str, work: Callable[[], Awaitable[object]]) -> bool:
        """One step of a run, on its own: whether it succeeded. A storage or backend outage
        is a warning; anything else is a bug, logged with its trace. Neither ends the loop
        (one step failing must not keep the others from running, now or next time)."""
        try:
            await work()
            return True
        except (BlobError, GalleryError, GatewayError) as exc:
            log.warning("%s: this run failed, next in %.0f s: %s", what, self.interval_s, exc)
        except Exception:
            log.exception("%s: this run failed unexpectedly, next in %.0f s", what, self.interval_s)
        return False

    async def _resume_deletions(self) -> None:
        if self.deleter is not None:
            await self._step("deleted collections", self.deleter.resume)

    async def _loop(self) -> None:
        # Collections a stopped gateway left half-deleted are finished soon after the start
        # (a scroll of the collection records: cheap); the collection itself waits one
        # interval, so that a restart loop does not turn into a listing loop.
        await asyncio.sleep(min(self.interval_s, _FIRST_RESUME_S))
        await self._resume_deletions()
        await asyncio.sleep(max(0.0, self.interval_s - _FIRST_RESUME_S))
        while True:
            # First: the collections it finishes let go of their originals, collected next.
            await self._resume_deletions()
            collected = await self._step("blob collector", self.collect_once)
            self.runs.labels("ok" if collected else "failed").inc()
            await self._step("thumbnail collector", self.collect_thumbnails)
            if self.sweep is not None:
                await self._step("point sweep", self.sweep.sweep_once)
            await self._step("quota entries", self.sweep_quota)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

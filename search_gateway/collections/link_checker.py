"""Link health of web points: a background checker that re-verifies their source URLs.

Each period (``GATEWAY_LINK_CHECK_PERIOD_S``, 60 s) it takes a bounded batch of web points,
never-checked ones first, then the oldest ``link_checked`` first (scrolled in order of that
field's range index, and only those checked more than ``GATEWAY_LINK_RECHECK_AFTER_S`` ago,
so a small gallery is not checked over and over), downloads each point's latest URL through
the gateway's SSRF-guarded downloader and records the verdict on the point:

* the same picture (by content hash): ``live``, the failures in a row reset; a point that
  keeps no thumbnail yet gets one from these bytes (web points written before thumbnails);
* 404 or 410: ``stale`` / ``gone``;
* another picture: ``stale`` / ``changed`` (its thumbnail is still the kept copy of the
  picture it was);
* anything else (a timeout, a 5xx, a refused connection, a 403): one failure more, and only
  after ``FAILURES_TO_STALE`` in a row ``stale`` / ``unreachable``. Why 3: at the default rate
  a point is checked again days later, so three failures in a row span weeks, far beyond a
  CDN's bad hour or a host's maintenance night, while a host that is really dead is marked
  within a few rounds. One timeout never makes a result stale.

Every check records ``link_checked`` (now), so the point goes to the back of the line. A web
search that downloads the URL again refreshes the point itself (live, checked now: the
writer's merge keeps the latest check).

The bound: the batch of period ``k`` holds ``floor(r*(k+1)) - floor(r*k)`` points, with
``r = per_minute * period / 60``, so any run of periods stays within the per-minute rate
(one URL per point; a redirect hop or a retry of the downloader counts as that point's).

Several gateway replicas: each period's batch is taken under a lease, one record in the
store (``@link-checks``) that names the period and its holder, written with the store's
compare-and-set (``insert`` when it is missing, ``replace_if`` over the revision read,
then read back): of the replicas racing for a period exactly one wins and checks, the
others skip it. So the rate is the site's, whatever the number of replicas, and two
replicas never check the same URLs at once. (A hash partition by replica would need each
replica to know its index and the count, and a dead replica's share would go unchecked.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from search_gateway.collections.blobs.base import BlobError
from search_gateway.collections.records import META, new_revision
from search_gateway.collections.web_thumbnails import WebThumbnails
from search_gateway.errors import DownloadFailed, GatewayError
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import content_hash
from search_gateway.gallery.base import LIVE, STALE, GalleryError, GalleryFilter, GalleryPoint, VectorSpace
from search_gateway.gallery.gallery import Gallery
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.spaces import WEB
from search_gateway.metrics import Metrics

log = logging.getLogger(__name__)

FAILURES_TO_STALE = 3
GONE_STATUSES = frozenset({404, 410})
# The lease record: one per store, in the bookkeeping space (never an image: "@" collection).
LEASES = "@link-checks"
_LEASE = "lease"
_ONE = (1.0,)
# Checks of one batch in flight at once (the downloader bounds per host too).
_AT_ONCE = 8

Spaces = Callable[[], Awaitable[Sequence[VectorSpace]]]


@dataclass(frozen=True)
class Checked:
    """One period: whether this replica held its lease, and the outcome of each check."""

    leased: bool
    outcomes: tuple[str, ...] = ()


def batch_size(per_minute: int, period_s: float, slot: int) -> int:
    """Points checked in period ``slot``: the per-minute rate spread over the periods exactly."""
    rate = per_minute * period_s / 60.0
    return math.floor(rate * (slot + 1) + 1e-9) - math.floor(rate * slot + 1e-9)


def verdict(point: GalleryPoint, now: datetime, *, data: bytes | None = None,
            failure: DownloadFailed | None = None) -> tuple[GalleryPoint, str]:
    """The point with this check recorded, and the outcome (the metrics label)."""
    if data is not None:
        if content_hash(data) != point.content_hash:
            return replace(point, link_checked=now, link_state=STALE, link_reason="changed", link_failures=0), "changed"
        return replace(point, link_checked=now, link_state=LIVE, link_reason=None, link_failures=0), "live"
    assert failure is not None
    if failure.http_status in GONE_STATUSES:
        return replace(point, link_checked=now, link_state=STALE, link_reason="gone", link_failures=0), "gone"
    failures = point.link_failures + 1
    if failures >= FAILURES_TO_STALE:
        return (replace(point, link_checked=now, link_state=STALE, link_reason="unreachable", link_failures=failures),
                "unreachable")
    # Not yet stale: the state it had stays (a gone one stays gone, a live one live).
    return replace(point, link_checked=now, link_state=point.link_state or LIVE, link_failures=failures), "failed"


class LinkChecker:
    def __init__(self, link: GalleryLink, downloader: Downloader, metrics: Metrics, spaces: Spaces, *,
                 per_minute: int, period_s: float, recheck_after_s: float, timeout_s: float,
                 thumbnails: WebThumbnails | None = None, clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.downloader = downloader
        self.metrics = metrics
        self.spaces = spaces
        self.per_minute = per_minute
        self.period_s = period_s
        self.recheck_after_s = recheck_after_s
        self.timeout_s = timeout_s
        self.thumbnails = thumbnails
        self.clock = clock
        self.replica = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> Checked:
        """This period's batch, if this replica wins its lease."""
        slot = int(self.clock() // self.period_s)
        n = batch_size(self.per_minute, self.period_s, slot)
        gallery = await self.link.gallery()
        spaces = list(await self.spaces())
        outcomes: list[str] = []
        leased = n > 0 and await self._lease(gallery, slot)
        if leased:
            now = datetime.fromtimestamp(self.clock(), UTC)
            for space, points in await self._due(gallery, spaces, n, now):
                outcomes.extend(await self._check(gallery, space, points, now))
        await self._count_stale(gallery, spaces)
        return Checked(leased, tuple(outcomes))

    async def _lease(self, gallery: Gallery, slot: int) -> bool:
        store = gallery.store
        mine = GalleryPoint(_LEASE, _ONE, LEASES, revision=new_revision(),
                            record={"slot": slot, "holder": self.replica})
        found = await store.retrieve(META, [mine.id])
        if not found:
            await store.insert(META, [mine])
        elif int(found[0].record.get("slot", -1)) >= slot:
            return False  # another replica took this period
        else:
            await store.replace_if(META, mine, found[0].revision)
        back = await store.retrieve(META, [mine.id])
        return bool(back) and back[0].revision == mine.revision

    async def _due(self, gallery: Gallery, spaces: Sequence[VectorSpace], n: int,
                   now: datetime) -> list[tuple[VectorSpace, list[GalleryPoint]]]:
        """Up to ``n`` web points: never checked first, then the oldest checked (past the recheck age)."""
        store, due = gallery.store, []
        before = now - timedelta(seconds=self.recheck_after_s)
        for space in spaces:
            if n <= 0:
                break
            never = await store.scroll(space, limit=n, filter=GalleryFilter(collections=(WEB,), link_unchecked=True))
            points = [p for p in never.points if not p.record][:n]
            if len(points) < n:
                oldest = await store.scroll(space, limit=n - len(points), oldest_checked=True,
                                            filter=GalleryFilter(collections=(WEB,), checked_before=before))
                points += [p for p in oldest.points if not p.record]
            points = [p for p in points if p.urls][:n]
            if points:
                due.append((space, points))
                n -= len(points)
        return due

    async def _check(self, gallery: Gallery, space: VectorSpace, points: Sequence[GalleryPoint],
                     now: datetime) -> list[str]:
        # With their vectors: remember() writes whole points (and merges with what is stored then).
        full = [p for p in await gallery.store.retrieve(space, [p.id for p in points]) if p.vector is not None]
        gate = asyncio.Semaphore(_AT_ONCE)

        async def one(point: GalleryPoint) -> tuple[GalleryPoint, str]:
            async with gate:
                try:
                    data = await self.downloader.fetch(point.urls[-1], timeout=self.timeout_s)
                except DownloadFailed as exc:
                    return verdict(point, now, failure=exc)
                checked, outcome = verdict(point, now, data=data)
                if outcome == "live" and not point.thumbnail and self.thumbnails is not None:
                    checked = replace(checked, thumbnail=await self.thumbnails.keep(data))
                return checked, outcome

        done = await asyncio.gather(*(one(p) for p in full))
        await gallery.remember(space, [p for p, _ in done])
        for _, outcome in done:
            self.metrics.link_checks.labels(outcome).inc()
        return [outcome for _, outcome in done]

    async def _count_stale(self, gallery: Gallery, spaces: Sequence[VectorSpace]) -> None:
        total = 0
        for space in spaces:
            total += await gallery.store.count(space, GalleryFilter(collections=(WEB,), link_state=STALE))
        self.metrics.stale_points.set(total)

    async def _loop(self) -> None:
        while True:
            # To the start of the next period: replicas meet at the same slot boundaries.
            await asyncio.sleep(self.period_s - self.clock() % self.period_s)
            try:
                await self.check_once()
            except (BlobError, GalleryError, GatewayError) as exc:
                log.warning("link checker: this period failed, next in %.0f s: %s", self.period_s, exc)
            except Exception:
                log.exception("link checker: this period failed unexpectedly")

    def start(self) -> None:
        if self.per_minute > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

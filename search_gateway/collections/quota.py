"""A tenant's quota of images and bytes, reserved before an upload does its work.

Several gateway replicas share one store and none of the engines has a counter to
increment atomically, so a quota read then written ("room = limit - count") lets every
upload in flight take the same last room (10 concurrent requests of 10 images once added
100 against a limit of 20). Instead, an upload *reserves* first:

1. it writes one entry per new image it means to add (collection ``@quota``, the
   image's size in bytes), which counts in the tenant's usage like an image;
2. it reads the usage (images and bytes), its own entries and everyone else's included;
3. if that is over a limit, it deletes its own entries from the last one back until it
   is not: those images are rejected (``quota_reached``), the rest go ahead;
4. once its images are written (their records count instead), it deletes its entries.

Whichever of two racing uploads reads last sees both reservations (each wrote before it
read), and entries only ever shrink after being read, so the tenant never ends over its
limits: the overshoot is zero for any number of replicas, as long as the store reads
its own acknowledged writes (both engines do; a Qdrant cluster with replication needs
``write_consistency_factor`` = replication factor, see docs/deployment.md). The price is
under contention only: two uploads that read each other's reservations both give way
for the excess, so a full quota may turn away a little more than it had to, never less.
Within one replica, reservations take turns per tenant (a lock), so one busy client
never turns its own requests away.

Entries of an upload whose gateway died are left behind; they count (so the quota errs
on the safe side) until the collector removes them ``reservation_ttl_s`` after they were
written (``sweep``). Bytes released when images are deleted but not yet collected
(``@released``, written by collections/deletion.py) count for the tenant the same way
until the collector's grace has passed.

An entry is a record (records.py): ``bytes`` (top level: the usage facet counts it by
size class, as an image's), record ``{"kind": "quota-reserved" | "quota-released",
"written"}``. Version 1 kept ``written`` in ``first_seen``/``last_seen``; ``sweep`` reads
both (entries are short-lived: a store of version 1 holds none past their ttl).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from search_gateway.collections.records import META, RELEASED, RESERVED, CollectionRecords, moment, new_revision, stamp
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore, pages
from search_gateway.gallery.schema import class_bytes, size_class

log = logging.getLogger(__name__)

_ONE = (1.0,)
_KINDS = {RESERVED: "quota-reserved", RELEASED: "quota-released"}


def entry(kind: str, tenant: str, size: int, now: datetime) -> GalleryPoint:
    """A quota entry of ``kind`` (RESERVED or RELEASED) for ``size`` bytes, written ``now``."""
    return GalleryPoint(new_revision(), _ONE, kind, tenant, bytes=size,
                        record={"kind": _KINDS[kind], "written": stamp(now)})


def written(point: GalleryPoint) -> datetime | None:
    """When a quota entry was written (version 1 kept it in ``last_seen``)."""
    return moment(point.record.get("written")) if point.record else point.last_seen


@dataclass(frozen=True)
class Limits:
    """0 in any: no limit of that kind."""

    images: int
    bytes: int
    # Collections of one tenant (checked by the create route, with the same turn).
    collections: int = 0

    @property
    def any(self) -> bool:
        return bool(self.images or self.bytes)


@dataclass
class Reservation:
    """Room held for the first ``granted`` images of a request; ``release`` it when they are written."""

    store: GalleryStore | None
    granted: int
    ids: list[str] = field(default_factory=list)
    # Which limit turned the rest away ("images" or "bytes"); "" when all were granted.
    full: str = ""

    async def release(self) -> None:
        ids, self.ids = self.ids, []
        if not ids or self.store is None:
            return
        try:
            await self.store.delete(META, ids)
        except GalleryError as exc:
            # Never the request's failure: the entries only err on the safe side until they expire.
            log.warning("quota: %d reservation entries stay until they expire: %s", len(ids), exc)


class Quota:
    """Reservations against a tenant's limits (see the module's docstring); one per gateway."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # Per tenant, this replica's reservations take turns: a request never gives way to
        # another of the same replica (they would both, for the same excess). One lock per
        # tenant that ever uploaded: tenants are configured API keys, a short list.
        self._turns: dict[str, asyncio.Lock] = {}

    def turn(self, tenant: str) -> asyncio.Lock:
        """This replica's turn for ``tenant``: a write, then a count that may take it back
        (a reservation, a new collection), is done by one request of the tenant at a time."""
        return self._turns.setdefault(tenant, asyncio.Lock())

    async def reserve(self, recs: CollectionRecords, tenant: str, sizes: Sequence[int]) -> Reservation:
        """Room for the longest prefix of ``sizes`` (bytes of each new image) that fits both limits."""
        if not self.limits.any or not sizes:
            return Reservation(None, len(sizes))
        async with self.turn(tenant):
            now = datetime.now(UTC)
            entries = [entry(RESERVED, tenant, size, now) for size in sizes]
            await recs.store.upsert(META, entries)
            try:
                usage = await recs.usage(tenant)
            except BaseException:
                await recs.store.delete(META, [e.id for e in entries])
                raise
            over_images = usage.images - self.limits.images if self.limits.images else 0
            over_bytes = usage.bytes - self.limits.bytes if self.limits.bytes else 0
            granted = len(entries)
            full = "images" if over_images > 0 else "bytes" if over_bytes > 0 else ""
            while granted and (over_images > 0 or over_bytes > 0):
                granted -= 1
                over_images -= 1
                over_bytes -= class_bytes(size_class(sizes[granted]))
            if granted < len(entries):
                await recs.store.delete(META, [e.id for e in entries[granted:]])
        return Reservation(recs.store, granted, [e.id for e in entries[:granted]], full)


async def note_released(store: GalleryStore, tenant: str, size: int) -> None:
    """Count ``size`` bytes of originals the tenant let go but the collector has not taken yet.
    Best effort: the images are deleted already, and a delete that happened must not fail."""
    now = datetime.now(UTC)
    try:
        await store.upsert(META, [entry(RELEASED, tenant, size, now)])
    except GalleryError as exc:
        log.warning("quota: %d released bytes of %s not counted until collected: %s", size, tenant, exc)


async def sweep(store: GalleryStore, *, reservation_ttl_s: float, released_ttl_s: float) -> int:
    """Delete quota entries past their time: reservations of uploads that died, and released
    bytes the collector has had its grace to take; how many. Entries are few (in flight)."""
    now = datetime.now(UTC)
    cutoff = {RESERVED: now - timedelta(seconds=reservation_ttl_s),
              RELEASED: now - timedelta(seconds=released_ttl_s)}
    expired: list[str] = []
    async for page in pages(store, META, GalleryFilter(collections=(RESERVED, RELEASED))):
        expired += [p.id for p in page if (at := written(p)) is None or at < cutoff[p.collection]]
    if expired:
        await store.delete(META, expired)
        log.info("quota: removed %d expired entries (uploads cut short, released bytes collected)", len(expired))
    return len(expired)

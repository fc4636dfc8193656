"""The sweep of private points no collection record holds, run on the blob collector's
schedule (blob_collector.py).

How such a point arises: an upload writes the original's bytes, then the image's points
in each model's space, then its record in the collections' space (records.py, same
id); a gateway killed between the points and the record leaves points that no listing
shows, that no delete of the image or of its collection reaches (both go by the
records), and that the tenant's searches of all its collections would find. The sweep
deletes, in every space of a model the embed server serves, each private point whose
record is missing and that was last written more than ``GATEWAY_BLOBS_GC_GRACE_S`` ago.

Why the grace, and why ``last_seen``: an upload in progress on any replica has written
its points and not yet its record, exactly like one that died. ``Gallery.remember``
renews a point's ``last_seen`` on every write, so a point re-written by an upload now
looks young even when an earlier, interrupted upload of the same picture made it long
ago (its ``first_seen`` stays that old; the reindex job even writes the record's
``first_seen``). A reindex writes the record before the points, so its points are never
record-less unless the image was deleted meanwhile: then sweeping them is right.

Which points: each tenant's, scrolled with the store's tenant filter (an indexed key), so
a sweep costs in proportion to the private points and never walks the public ``web``
points, which it never touches. The tenants are the configured ones (those that can
search) and every tenant that has a collection (a tenant since removed from the keys). Not
swept: a tenant with neither (nobody can search its points), and the spaces of models or
weights the embed server no longer serves (nothing searches them).

Cost: each run reads every private point once (a scroll) and looks up the records of
those past the grace, a page at a time: O(private points) per interval (hourly by
default), never the whole web gallery. A sweep of only the points that passed the grace
since the last run would need a range filter the store interface does not have.

Several replicas may sweep at once: a delete of a point already gone is a no-op, and each
point's age is read again right before its delete (an upload writes its points before
its record, so a point re-written since the page was read is young again). What remains
is the instant between that read and the delete, as for the blob collector; an upload
that lands in it keeps its record and bytes, and a reindex gives it the point back.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from search_gateway.clients.models import ModelCatalog
from search_gateway.collections.orphans import SpaceFor
from search_gateway.collections.records import META, CollectionRecords
from search_gateway.gallery.base import GalleryFilter, GalleryPoint, GalleryStore, VectorSpace, pages
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import TokenStore
from search_gateway.metrics import Metrics
from search_gateway.tenants import LOCAL, parse_api_keys

log = logging.getLogger(__name__)

# Points per scroll page and per records lookup (the engines' largest page).
PAGE = 1000

Spaces = Callable[[], Awaitable[Sequence[VectorSpace]]]


def served_spaces(catalog: ModelCatalog, space_for: SpaceFor) -> Spaces:
    """The current space of every model the embed server serves (raises BackendUnavailable
    when it cannot be asked: the sweep then waits for the next interval)."""

    async def spaces() -> list[VectorSpace]:
        found = [await space_for(m.name) for m in await catalog.models()]
        return [s for s in found if s is not None]

    return spaces


def configured_tenants(api_keys: Iterable[str], tenant_key: bytes) -> tuple[str, ...]:
    """The tenants the keys name; ``local`` when there are none (every caller is it)."""
    return tuple(sorted(set(parse_api_keys(api_keys, secret=tenant_key).values()))) or (LOCAL,)


@dataclass(frozen=True)
class Swept:
    """What one sweep did: private points looked at, and those deleted by tenant."""

    examined: int
    deleted: dict[str, int]


class PointSweep:
    def __init__(self, link: GalleryLink, spaces: Spaces, metrics: Metrics, *, grace_s: float,
                 tenants: Sequence[str] = (), page: int = PAGE) -> None:
        if grace_s < 0:
            raise ValueError("the grace period must not be negative")
        self.link = link
        self.spaces = spaces
        self.grace_s = grace_s
        self.tenants = tuple(tenants)
        self.page = page
        # Registered on the app's own registry (one per app, as metrics.py does).
        self.swept = Counter("gateway_points_swept_total",
                             "Points of private collections deleted because no collection record holds them "
                             "(uploads cut short between the points and the record).", registry=metrics.registry)

    async def sweep_once(self, *, now: datetime | None = None) -> Swept:
        """One sweep of every served space; ``now`` is for tests."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.grace_s)
        store = (await self.link.gallery()).store
        spaces = await self.spaces()
        # Collection records, not image records: one per collection, not one per image.
        tenants = sorted(set(self.tenants) | await CollectionRecords(store).tenants())
        examined, deleted = 0, Tally[str]()
        for space in spaces:
            for tenant in tenants:
                async for batch in pages(store, space, GalleryFilter(tenant=tenant), page=self.page):
                    # The filter is the engine's; the tenant check is ours: never a public point.
                    mine = [p for p in batch if p.tenant == tenant]
                    examined += len(mine)
                    gone = await self._sweep(store, space, [p for p in mine if _older(p, cutoff)], cutoff)
                    deleted[tenant] += gone
        total = sum(deleted.values())
        if total:
            self.swept.inc(total)
            log.info("point sweep: deleted %d points no collection record holds (%s) in %d spaces; examined %d",
                     total, ", ".join(f"{t}: {n}" for t, n in sorted(deleted.items()) if n), len(spaces), examined)
        return Swept(examined, {t: n for t, n in deleted.items() if n})

    async def _sweep(self, store: GalleryStore, space: VectorSpace, old: list[GalleryPoint], cutoff: datetime) -> int:
        """Delete those of ``old`` without a record that are still old; how many went."""
        if not old:
            return 0
        held = {r.id for r in await store.retrieve(META, [p.id for p in old])}
        orphans = [p.id for p in old if p.id not in held]
        if not orphans:
            return 0
        # Read last, right before the delete: an upload in progress writes the points first,
        # so one whose record is still to come has re-written (renewed) them by now.
        still = [p.id for p in await store.retrieve(space, orphans) if _older(p, cutoff)]
        if still:
            await store.delete(space, still)
            await TokenStore(store).delete(space, still)  # their patch tokens (issue 23)
        return len(still)


def _older(point: GalleryPoint, cutoff: datetime) -> bool:
    # A point with no date (never written through Gallery.remember) is never guessed old.
    written = point.last_seen or point.first_seen
    return written is not None and written < cutoff

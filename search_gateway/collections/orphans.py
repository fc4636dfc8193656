"""No orphan visible: a private point whose original is missing from the blob store is
never handed out (search results, the image listing, an image's metadata), and is
removed in the background.

How one arises: an upload that crashed after its points but before its record (the
collector then takes the unreferenced bytes), the rare race in blobs/base.py, or an
operator deleting files by hand. Points without a record are also swept on the
collector's schedule whether or not a search sees them (point_sweep.py); the removal
here is for what a search meets first, and for records whose bytes are gone.

Checked where it is cheap: only private results and listed images, a ``stat`` (folder)
or ``HEAD`` (bucket) each, run concurrently; web results have no original here. The
removal re-checks the bytes first: an upload of the same picture in progress wrote them
before its points, so it is never undone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from search_gateway.collections.blobs.base import BlobError, BlobStore
from search_gateway.collections.records import META
from search_gateway.gallery.base import GalleryError, GalleryFilter, VectorSpace, pages
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import TokenStore

log = logging.getLogger(__name__)

# Concurrent existence checks per call (a listing has up to 1,000 images).
_CHECKS_AT_ONCE = 32
# The longest a listing or a search waits for these checks; past it nothing is hidden.
_CHECKS_BUDGET_S = 5.0
# Hashes waiting for removal; past it new ones wait for the next time they are seen.
_MAX_PENDING = 1000

SpaceFor = Callable[[str], Awaitable[VectorSpace | None]]


class Originals:
    """Which originals exist, and the removal of points whose original does not."""

    def __init__(self, blobs: BlobStore, link: GalleryLink, space_for: SpaceFor) -> None:
        self.blobs = blobs
        self.link = link
        self.space_for = space_for
        # (tenant, hash) -> points a search saw in a model space (those may have no record).
        self._pending: dict[tuple[str, str], list[tuple[VectorSpace, str]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def missing(self, hashes: Iterable[str]) -> set[str]:
        """The hashes whose bytes are not stored. A store that cannot answer hides nothing:
        an outage must not empty every private result."""
        wanted = list(dict.fromkeys(hashes))
        gate = asyncio.Semaphore(_CHECKS_AT_ONCE)
        # After one failure the rest are not asked: a bucket that hangs would otherwise hold a
        # listing of 1,000 images for 1,000 / 32 rounds of its timeouts.
        down = asyncio.Event()

        async def gone(sha256: str) -> bool:
            async with gate:
                if down.is_set():
                    return False
                try:
                    return not await self.blobs.exists(sha256)
                except BlobError as exc:
                    if not down.is_set():
                        log.warning("originals not checked (the blob store failed): %s", exc)
                    down.set()
                    return False

        try:
            answers = await asyncio.wait_for(asyncio.gather(*(gone(h) for h in wanted)), _CHECKS_BUDGET_S)
        except TimeoutError:
            log.warning("originals not checked: the blob store took over %.0f s", _CHECKS_BUDGET_S)
            return set()
        return {h for h, absent in zip(wanted, answers, strict=True) if absent}

    def remove_later(self, tenant: str, hashes: Iterable[str], seen: Sequence[tuple[str, VectorSpace, str]] = ()) -> None:
        """Remove in the background; ``seen``: (hash, space, point id) a search found."""
        for sha256 in hashes:
            if len(self._pending) < _MAX_PENDING:
                self._pending.setdefault((tenant, sha256), [])
        for sha256, space, id in seen:
            if (tenant, sha256) in self._pending:
                self._pending[(tenant, sha256)].append((space, id))
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            (tenant, sha256), points = next(iter(self._pending.items()))
            try:
                await self.remove(tenant, [sha256], points)
            except (GalleryError, BlobError) as exc:
                log.warning("orphan %s of %s not removed now: %s", sha256[:12], tenant, exc)
            finally:
                self._pending.pop((tenant, sha256), None)

    async def remove(self, tenant: str, hashes: Sequence[str], points: Sequence[tuple[VectorSpace, str]] = ()) -> int:
        """Delete the tenant's points and records of these pictures if their bytes are still
        missing; how many records went."""
        gone = await self.missing(hashes)
        if not gone:
            return 0
        store = (await self.link.gallery()).store
        records = [p async for page in pages(store, META, GalleryFilter(tenant=tenant, content_hashes=tuple(gone)))
                   for p in page if p.tenant == tenant and not p.collection.startswith("@")]
        by_space: dict[VectorSpace, list[str]] = {}
        for space, id in points:  # an upload cut short before its record has points only
            by_space.setdefault(space, []).append(id)
        by_model: dict[str, list[str]] = {}
        for record in records:
            for model in filter(None, record.engine.split(",")):
                by_model.setdefault(model, []).append(record.id)
        # Points first, records last (as collection_deletion.remove_images): a crash half-way
        # leaves a record that the next look finds again.
        for model, ids in by_model.items():
            current = await self.space_for(model)
            if current is not None:
                by_space.setdefault(current, []).extend(ids)
        for space, ids in by_space.items():
            await store.delete(space, list(dict.fromkeys(ids)))
            await TokenStore(store).delete(space, list(dict.fromkeys(ids)))  # their patch tokens (issue 23)
        await store.delete(META, [r.id for r in records])
        if records:
            log.warning("removed %d images of %s whose originals are missing from the blob store: %s",
                        len(records), tenant, ", ".join(sorted(h[:12] for h in gone)))
        return len(records)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

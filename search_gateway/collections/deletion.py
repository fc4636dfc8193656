"""Deleting private images and collections: points, records, then originals nothing holds.

A collection is hidden at once and emptied in the background. Emptying it deletes, per
image, its record and (when no other collection holds the picture) its original: against
a Qdrant server and a bucket that is a few round trips per image, minutes for a studio's
archive, longer than any HTTP request (or the proxy in front of it) should wait. So
``DELETE /collections/{name}``:

1. marks the collection's record ``deleting`` (records.py): from then on the
   collection does not exist for its tenant (404 on every route, not listed, not
   searched: a search of "all my collections" asks for the live ones by name), and its
   name cannot be taken again until it is gone (409);
2. deletes the collection's points in the space of each model it was indexed with, one
   filtered delete per space;
3. answers 204, and empties it here in the background, a page of records at a time:
   each image's points (any an upload wrote meanwhile), its record, its original when
   nothing else holds it; then the reindex job records, the collection's record last.

A gateway killed after (1) leaves the ``deleting`` record behind: every replica's
collector (blob_collector.py) finishes such collections soon after it starts and then
on its schedule. Two replicas emptying the same collection is harmless (every delete is
idempotent), and an emptying that comes late never touches a collection created again
under the same name: it goes on only while the record it started from (its creation
time) still says ``deleting``.

Uploads and reindex jobs under way when the collection is deleted check that it is
still alive before and after they write (uploads.py, reindex.py), and take back what
they wrote when it is not: emptying may already have passed them.

An original is released at once only if it was not (re)written in the last
``GATEWAY_BLOBS_RELEASE_GRACE_S``: an upload of the same picture in progress put its
bytes moments ago, and its record may land just after ours was checked; those bytes are
the collector's (blob_collector.py), after its own grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from search_gateway.collections import quota
from search_gateway.collections.blobs.base import BlobError, BlobStore
from search_gateway.collections.blobs.gc import release
from search_gateway.collections.records import Collection, CollectionRecords
from search_gateway.errors import GatewayError
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import TokenStore

log = logging.getLogger(__name__)

SpaceFor = Callable[[str], Awaitable[VectorSpace | None]]
# Originals released at once per page (a bucket's HEAD and DELETE are each a round trip).
_RELEASES_AT_ONCE = 16


async def _still_deleting(recs: CollectionRecords, collection: Collection) -> bool:
    """Whether the record still marks this very collection deleting (not one created again)."""
    current = await recs.find(collection.tenant, collection.name)
    return current is not None and current.deleting and current.created == collection.created


async def remove_images(store: GalleryStore, space_for: SpaceFor, recs: CollectionRecords, blobs: BlobStore,
                        images: Sequence[GalleryPoint], *, release_grace_s: float) -> None:
    """Points in every model space first, then the records, then bytes nothing holds any more.

    In that order a crash half-way leaves what a later look finds again: records (the
    image is still listed and can be deleted again), or bytes without a record (the
    collector's, after its grace period).
    """
    by_model: dict[str, list[str]] = {}
    for image in images:
        for model in filter(None, image.engine.split(",")):
            by_model.setdefault(model, []).append(image.id)
    for model, ids in by_model.items():
        space = await space_for(model)
        if space is not None:
            await store.delete(space, ids)
            await TokenStore(store).delete(space, ids)  # their patch tokens (issue 23), same ids
    await recs.remove_images(images)
    gate = asyncio.Semaphore(_RELEASES_AT_ONCE)

    async def left_over(sha256: str) -> bool:
        """Release the original; whether its bytes stay with nothing holding them (the collector's)."""
        async with gate:
            try:
                if await release(blobs, sha256, recs.referenced, older_than_s=release_grace_s):
                    return False
            except BlobError as exc:
                # The image is gone (points and record): its bytes are the collector's now.
                log.warning("the original %s stays for the collector: %s", sha256[:12], exc)
            return not await recs.referenced(sha256)

    hashes = list(dict.fromkeys(i.content_hash for i in images))
    stays = {h for h, left in zip(hashes, await asyncio.gather(*map(left_over, hashes)), strict=True) if left}
    # Bytes on their way to the collector still count for the tenant that let them go (quota.py).
    by_tenant: dict[str, int] = {}
    for image in images:
        if image.content_hash in stays and image.tenant is not None and image.bytes:
            by_tenant[image.tenant] = by_tenant.get(image.tenant, 0) + image.bytes
    for tenant, size in by_tenant.items():
        await quota.note_released(store, tenant, size)


class CollectionDeleter:
    """Hides a collection at once and empties it in the background (see the module's docstring)."""

    def __init__(self, link: GalleryLink, blobs: BlobStore, space_for: SpaceFor, *, release_grace_s: float,
                 forget_jobs: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.link = link
        self.blobs = blobs
        self.space_for = space_for
        self.release_grace_s = release_grace_s
        self.forget_jobs = forget_jobs
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def _records(self) -> CollectionRecords:
        return CollectionRecords((await self.link.gallery()).store)

    async def delete(self, collection: Collection) -> None:
        """Steps 1 and 2, then step 3 started in the background."""
        recs = await self._records()
        marked = replace(collection, deleting=True)
        await recs.mark_deleting(collection)
        # Deleted for its tenant from here on, whatever fails next: the emptying deletes the
        # points record by record anyway, so a failure here is logged, not answered.
        try:
            where = GalleryFilter(collections=(collection.name,), tenant=collection.tenant)
            for model in collection.models:
                space = await self.space_for(model)
                if space is not None:
                    await recs.store.delete_where(space, where)
                    await TokenStore(recs.store).forget(space, where)  # their patch tokens (issue 23)
            if self.forget_jobs is not None:  # a queued or running job stops now, not at its next batch
                await self.forget_jobs(collection.tenant, collection.name)
        except (GalleryError, GatewayError) as exc:
            log.warning("deleted collection %s/%s: its points go with the emptying instead: %s",
                        collection.tenant, collection.name, exc)
        self._start(marked)

    def _start(self, collection: Collection) -> None:
        key = (collection.tenant, collection.name)
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        task = asyncio.ensure_future(self._empty_logged(collection))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None) if self._tasks.get(key) is task else None)

    async def _empty_logged(self, collection: Collection) -> None:
        try:
            await self.empty(collection)
        except asyncio.CancelledError:
            raise
        except (GalleryError, BlobError) as exc:
            log.warning("emptying the deleted collection %s/%s stopped; the collector finishes it later: %s",
                        collection.tenant, collection.name, exc)
        except Exception:
            log.exception("emptying the deleted collection %s/%s failed; the collector tries again later",
                          collection.tenant, collection.name)

    async def empty(self, collection: Collection) -> int:
        """Step 3 for a collection marked deleting: every image, the job records, then its
        record; how many images. Stops (0) once the record is not the one it started from."""
        recs = await self._records()
        tenant, name = collection.tenant, collection.name
        removed = 0
        while await _still_deleting(recs, collection):
            # Always the first page: each round deletes what it read.
            images = (await recs.images(tenant, name)).points
            if images:
                await remove_images(recs.store, self.space_for, recs, self.blobs, images,
                                    release_grace_s=self.release_grace_s)
                removed += len(images)
                continue
            if self.forget_jobs is not None:
                await self.forget_jobs(tenant, name)
            if await _still_deleting(recs, collection):
                await recs.forget(tenant, name)
                log.info("deleted collection %s/%s emptied: %d images", tenant, name, removed)
            break
        return removed

    async def resume(self) -> int:
        """Empty every collection left marked deleting (a gateway stopped while emptying it);
        how many were finished here. Run by the collector; one that fails does not stop the rest."""
        recs = await self._records()
        finished = 0
        for collection in await recs.deleting():
            if (collection.tenant, collection.name) in self._tasks:
                continue  # being emptied by this process already
            try:
                await self.empty(collection)
                finished += 1
            except (GalleryError, BlobError) as exc:
                log.warning("emptying the deleted collection %s/%s stopped; tried again next run: %s",
                            collection.tenant, collection.name, exc)
        return finished

    async def settled(self) -> None:
        """Return once every collection being emptied by this process is (a shutdown hook, and tests)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop emptying; the records still say deleting, and the next process finishes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

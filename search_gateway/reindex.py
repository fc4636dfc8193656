"""Re-embedding a private collection with another model (or new weights), in the background.

``POST /collections/{name}/reindex?embedding_model=...`` answers 202 at once; the job
reads each original from the blob store, embeds them in batches through the embed
client and writes the points with the image record's payload. Vectors land in the
space of the embed reply's model and weights fingerprint, so a model never indexed and
a model whose weights changed are the same job.

Progress lives in the store, not in this process: a job record per (tenant, collection,
model) in the collections' payload-only space (``collection="@reindex"``), so every
replica lists it and a ``kill -9`` leaves it behind. A record still saying ``queued``
or ``reindexing`` that started before this process and is not running here was
interrupted by a restart: the listing says ``interrupted`` and the job may be asked
again. Running a job twice is harmless: point ids are (tenant, collection, hash), so
the second run overwrites the first's points with the same vectors.

Layout of a job record (ordinary gallery point fields, as collections.py does):
``content_hash="<collection>:<model>"``, ``engine=<model>``, ``title=<state>``,
``platform=<reason>``, ``first_seen``/``last_seen`` = started/updated,
``width``/``height`` = done/total, ``urls=(<weights fingerprint>,)`` once known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from search_gateway.backends import EmbedClient
from search_gateway.blobs.base import BlobError, BlobNotFound, BlobStore
from search_gateway.collections import META, CollectionRecords
from search_gateway.errors import Conflict, GatewayError, RateLimited
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore
from search_gateway.gallery.link import GalleryLink
from search_gateway.images import ImageLimits, prepare_in_thread
from search_gateway.search.gallery_source import space_of

log = logging.getLogger(__name__)

_JOBS = "@reindex"
_ONE = (1.0,)
QUEUED, RUNNING, INDEXED, FAILED, INTERRUPTED = "queued", "reindexing", "indexed", "failed", "interrupted"
# Jobs accepted but waiting for the one running slot; past it a request is shed (429).
MAX_WAITING = 8
# One job embeds at a time per gateway: a reindex must not starve the searches of the embed server.
_RUNNING_AT_ONCE = 1
# The store answers at most this many job records per tenant listing.
_PAGE = 1000


@dataclass(frozen=True)
class Job:
    tenant: str
    collection: str
    model: str
    state: str
    started: datetime
    updated: datetime
    done: int = 0
    total: int = 0
    skipped: int = 0
    reason: str = ""

    def point(self) -> GalleryPoint:
        return GalleryPoint(f"{self.collection}:{self.model}", _ONE, _JOBS, self.tenant, engine=self.model,
                            title=self.state, platform=self.reason, first_seen=self.started, last_seen=self.updated,
                            width=self.done, height=self.total, source_pages=(str(self.skipped),))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "started": self.started.isoformat(),
                               "updated": self.updated.isoformat(), "done": self.done, "total": self.total}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.reason:
            out["reason"] = self.reason
        return out


def _job(point: GalleryPoint) -> Job:
    name, _, model = point.content_hash.partition(":")
    now = datetime.now(UTC)
    skipped = int(point.source_pages[0]) if point.source_pages and point.source_pages[0].isdigit() else 0
    return Job(point.tenant or "", name, model, point.title, point.first_seen or now, point.last_seen or now,
               point.width or 0, point.height or 0, skipped, point.platform)


class Reindexer:
    """The reindex jobs of one gateway: at most one embeds at a time, a few wait."""

    def __init__(self, link: GalleryLink, blobs: BlobStore, embed: EmbedClient, limits: ImageLimits,
                 batch_images: int, batch_bytes: int) -> None:
        self.link = link
        self.blobs = blobs
        self.embed = embed
        self.limits = limits
        self.batch_images = batch_images
        self.batch_bytes = batch_bytes
        # Records that say running but started before this moment were cut short by a restart.
        self.process_started = datetime.now(UTC)
        self._slot = asyncio.Semaphore(_RUNNING_AT_ONCE)
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    # --- records
    async def _store(self) -> GalleryStore:
        return (await self.link.gallery()).store

    async def _save(self, job: Job) -> None:
        await (await self._store()).upsert(META, [job.point()])

    async def jobs_of(self, tenant: str) -> dict[str, list[Job]]:
        """The tenant's job records by collection name, as a person should read them."""
        store = await self._store()
        hits = await store.search(META, _ONE, limit=_PAGE, filter=GalleryFilter(collections=(_JOBS,), tenant=tenant))
        found: dict[str, list[Job]] = {}
        for hit in hits:
            if hit.point.tenant == tenant:
                job = self._seen_here(_job(hit.point))
                found.setdefault(job.collection, []).append(job)
        return found

    def _seen_here(self, job: Job) -> Job:
        if job.state in (QUEUED, RUNNING) and not self._running(job) and job.started < self.process_started:
            return replace(job, state=INTERRUPTED,
                           reason="The gateway restarted before this reindex finished; ask for it again.")
        return job

    def _running(self, job: Job) -> bool:
        task = self._tasks.get((job.tenant, job.collection, job.model))
        return task is not None and not task.done()

    async def forget(self, tenant: str, name: str) -> None:
        """Drop a deleted collection's job records (its running job stops at its next batch)."""
        store = await self._store()
        jobs = (await self.jobs_of(tenant)).get(name, [])
        if jobs:
            await store.delete(META, [j.point().id for j in jobs])

    # --- running
    async def start(self, tenant: str, name: str, model: str, total: int) -> Job:
        """Queue a job; 409 while the same one runs (here or, started since, on another replica)."""
        now = datetime.now(UTC)
        job = Job(tenant, name, model, QUEUED, now, now, total=total)
        if self._running(job):
            raise Conflict(f"A reindex of {name!r} with {model} is already running; see GET /collections.")
        stored = await (await self._store()).retrieve(META, [job.point().id])
        if stored:
            earlier = self._seen_here(_job(stored[0]))
            if earlier.state in (QUEUED, RUNNING):
                raise Conflict(f"A reindex of {name!r} with {model} is already running (started "
                               f"{earlier.started.isoformat()}); see GET /collections.")
        if sum(1 for t in self._tasks.values() if not t.done()) > MAX_WAITING:
            raise RateLimited("Too many reindex jobs are waiting on this gateway; ask again in a minute.",
                              retry_after=60)
        await self._save(job)
        key = (tenant, name, model)
        task = asyncio.ensure_future(self._run(job))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None) if self._tasks.get(key) is task else None)
        return job

    async def close(self) -> None:
        """Stop every job; their records keep saying running, which the next process shows as interrupted."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job) -> None:
        async with self._slot:
            try:
                await self._reindex(job)
            except asyncio.CancelledError:
                raise
            except (GatewayError, GalleryError, BlobError) as exc:
                reason = exc.message if isinstance(exc, GatewayError) else str(exc)
                log.warning("reindex of %s/%s with %s failed: %s", job.tenant, job.collection, job.model, reason)
                await self._fail(job, reason)
            except Exception:
                log.exception("reindex of %s/%s with %s failed", job.tenant, job.collection, job.model)
                await self._fail(job, "The reindex failed unexpectedly; the error was logged.")

    async def _fail(self, job: Job, reason: str) -> None:
        try:
            current = await (await self._store()).retrieve(META, [job.point().id])
            done = _job(current[0]) if current else job
            await self._save(replace(done, state=FAILED, reason=reason, updated=datetime.now(UTC)))
        except (GalleryError, BlobError) as exc:  # the store is down: the record stays "running", shown interrupted later
            log.warning("reindex of %s/%s: its failure could not be recorded: %s", job.tenant, job.collection, exc)

    async def _reindex(self, job: Job) -> None:
        gallery = await self.link.gallery()
        recs = CollectionRecords(gallery.store)
        total = await recs.count(job.tenant, job.collection)
        # One store page holds every record: the store has no scroll, and a record is small.
        images = await recs.images(job.tenant, job.collection, limit=max(total, 1))
        job = replace(job, state=RUNNING, total=len(images), updated=datetime.now(UTC))
        await self._save(job)
        for batch in _batches(images, self.batch_images):
            if await recs.get(job.tenant, job.collection) is None:
                return  # the collection was deleted meanwhile: nothing to finish, no record to keep
            written, skipped = await self._batch(gallery, job, batch)
            job = replace(job, done=job.done + len(batch), skipped=job.skipped + skipped, updated=datetime.now(UTC))
            await self._save(job)
        collection = await recs.get(job.tenant, job.collection)
        if collection is None:
            return
        # Listed as indexed only once every image has a point in the model's space.
        await recs.touch(collection, [job.model])
        await self._save(replace(job, state=INDEXED, updated=datetime.now(UTC)))

    async def _batch(self, gallery: Any, job: Job, batch: Sequence[GalleryPoint]) -> tuple[int, int]:
        """Embed and write one batch; (written, skipped: original missing or unreadable)."""
        # Read again just before writing: an image deleted since the listing must not come back.
        current = [p for p in await gallery.store.retrieve(META, [p.id for p in batch])
                   if p.tenant == job.tenant and p.collection == job.collection]
        skipped = len(batch) - len(current)
        ready: list[tuple[GalleryPoint, bytes]] = []
        for record in current:
            try:
                data = await self.blobs.get(record.content_hash)
                image = await prepare_in_thread(data, self.limits, record.title or "original", full_check=False)
            except BlobNotFound:
                skipped += 1  # an orphan record: the search and listings hide it (collection_routes)
                continue
            except GatewayError as exc:
                if exc.status >= 500:
                    raise
                skipped += 1
                continue
            ready.append((record, image.embed_bytes))
        written = 0
        for part in _by_bytes(ready, self.batch_bytes):
            embedded = await self.embed.embed(job.model, [data for _, data in part])
            space = space_of(job.model, embedded.provenance, int(embedded.vectors.shape[1]))
            if space is None:
                raise GalleryError(f"The embed server did not say which weights {job.model} runs; "
                                   "nothing more was stored.")
            # The record names the model before the point exists, so deleting the image
            # (collection_routes._forget, which deletes by the record's models) never
            # leaves this point behind.
            await gallery.store.upsert(META, [replace(r, engine=_merged(r.engine, job.model)) for r, _ in part])
            await gallery.remember(space, [
                GalleryPoint(r.content_hash, tuple(embedded.vectors[i].tolist()), job.collection, job.tenant,
                             urls=r.urls, title=r.title, platform=r.platform, width=r.width, height=r.height,
                             tags=r.tags, first_seen=r.first_seen)
                for i, (r, _) in enumerate(part)])
            written += len(part)
        return written, skipped


def _merged(engine: str, model: str) -> str:
    return ",".join(dict.fromkeys([m for m in engine.split(",") if m] + [model]))


def _batches(items: Sequence[GalleryPoint], size: int) -> list[Sequence[GalleryPoint]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _by_bytes(items: list[tuple[GalleryPoint, bytes]], limit: int) -> list[list[tuple[GalleryPoint, bytes]]]:
    """Split so that each Embed call stays under the byte limit (one image alone may pass it)."""
    parts: list[list[tuple[GalleryPoint, bytes]]] = []
    size = 0
    for item in items:
        if not parts or (size + len(item[1]) > limit and parts[-1]):
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += len(item[1])
    return parts

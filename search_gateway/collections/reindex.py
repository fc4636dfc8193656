"""Re-embedding a private collection with another model (or new weights), in the background.

``POST /collections/{name}/reindex?embedding_model=...`` answers 202 at once; the job
reads each original from the blob store, embeds them in batches through the embed
client and writes the points with the image record's payload. Vectors land in the
space of the embed reply's model and weights fingerprint, so a model never indexed and
a model whose weights changed are the same job.

Progress lives in the store, not in this process: a job record per (tenant, collection,
model) in the collections' payload-only space (``collection="@reindex"``), so every
replica lists it and a ``kill -9`` leaves it behind. The gateway running a job rewrites
its record every ``GATEWAY_REINDEX_HEARTBEAT_S`` while it waits or runs; a record still
saying ``queued`` or ``reindexing`` that nobody rewrote for ``STALE_HEARTBEATS`` beats
belongs to a gateway that died (or was cut off from the store): every replica lists it
as ``interrupted``, and the job may be asked again, on any replica. (The replicas' clocks
must agree to well within those six beats: NTP does.) Judging by the
heartbeat and not by when a process started keeps a replica started after the job from
calling a live job on another replica interrupted (and running it twice at once).
Running a job twice is harmless all the same: point ids are (tenant, collection, hash),
so the second run overwrites the first's points with the same vectors.

The collection is read a store page at a time (scroll), so its size is bounded by the
store, not by this process's memory.

Layout of a job record (a record, as records.py lays them out, payload version 2):
``content_hash="<collection>:<model>"`` (the id), record ``{"kind": "reindex-job",
"collection", "model", "state", "reason", "done", "total", "skipped", "started",
"updated"}``. Version 1 reused image fields (``engine=<model>``, ``title=<state>``,
``platform=<reason>``, ``first_seen``/``last_seen`` = started/updated, ``width``/``height``
= done/total, ``source_pages=(<skipped>,)``); ``_job`` reads those too, and the job's
next write (any heartbeat) is in the new layout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from search_gateway.clients.backends import EmbedClient
from search_gateway.clients.embed_calls import pack
from search_gateway.collections import token_backfill, web_colour
from search_gateway.collections.blobs.base import BlobError, BlobNotFound, BlobStore
from search_gateway.collections.deletion import SpaceFor
from search_gateway.collections.records import JOBS as _JOBS
from search_gateway.collections.records import META, Collection, CollectionRecords, moment, stamp
from search_gateway.errors import BackendUnavailable, Conflict, GatewayError, RateLimited, storage_error
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits, PreparedImage, prepare_in_thread
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore, VectorSpace, pages
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import PatchWriter, TokenStore
from search_gateway.gallery.spaces import WEB, space_of
from search_gateway.gallery.writer import Tagger
from service_common.model_registry import text_models

log = logging.getLogger(__name__)

_ONE = (1.0,)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUEUED, RUNNING, INDEXED, FAILED, INTERRUPTED = "queued", "reindexing", "indexed", "failed", "interrupted"
# Jobs accepted but waiting for the one running slot; past it a request is shed (429).
MAX_WAITING = 8
# One job embeds at a time per gateway: a reindex must not starve the searches of the embed server.
_RUNNING_AT_ONCE = 1
# A job record not rewritten for this many heartbeats belongs to a gateway that is gone.
STALE_HEARTBEATS = 6
# Image records read from the store per page while a job walks its collection.
_PAGE = 256
# The ``kind`` of a job's record.
JOB_KIND = "reindex-job"


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
        # The web collection's job (colour backfill) is public: no tenant.
        return GalleryPoint(f"{self.collection}:{self.model}", _ONE, _JOBS, self.tenant or None, record={
            "kind": JOB_KIND, "collection": self.collection, "model": self.model, "state": self.state,
            "reason": self.reason, "done": self.done, "total": self.total, "skipped": self.skipped,
            "started": stamp(self.started), "updated": stamp(self.updated)})

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
    r = point.record
    if r:
        return Job(point.tenant or "", str(r.get("collection") or name), str(r.get("model") or model),
                   str(r.get("state") or ""), moment(r.get("started")) or now, moment(r.get("updated")) or now,
                   int(r.get("done") or 0), int(r.get("total") or 0), int(r.get("skipped") or 0),
                   str(r.get("reason") or ""))
    # Payload version 1: the fields of an image, reused.
    skipped = int(point.source_pages[0]) if point.source_pages and point.source_pages[0].isdigit() else 0
    return Job(point.tenant or "", name, model, point.title, point.first_seen or now, point.last_seen or now,
               point.width or 0, point.height or 0, skipped, point.platform)


class Reindexer:
    """The reindex jobs of one gateway: at most one embeds at a time, a few wait."""

    def __init__(self, link: GalleryLink, blobs: BlobStore, embed: EmbedClient, limits: ImageLimits,
                 batch_images: int, batch_bytes: int, heartbeat_s: float = 10.0, *,
                 space_for: SpaceFor | None = None, downloader: Downloader | None = None,
                 placement: Tagger | None = None, download_timeout_s: float = 10.0,
                 patches: PatchWriter | None = None) -> None:
        self.link = link
        # The model's current space (a point already there with its colour facts is current:
        # not embedded again, which makes a stopped job resumable), the downloader of the web
        # collection's colour backfill, and the body placement tagger of text-tower models.
        self.space_for = space_for
        self.downloader = downloader
        self.placement = placement
        # Issue 23: each point's patch tokens (a point without them is not current: the reindex
        # gives them; for web points a second walk after the colour one, collections/token_backfill.py).
        self.patches = patches
        self.download_timeout_s = download_timeout_s
        self.blobs = blobs
        self.embed = embed
        self.limits = limits
        self.batch_images = batch_images
        self.batch_bytes = batch_bytes
        self.heartbeat_s = heartbeat_s
        self.stale_after = timedelta(seconds=heartbeat_s * STALE_HEARTBEATS)
        self._slot = asyncio.Semaphore(_RUNNING_AT_ONCE)
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        # The latest state of each job running here, and one lock per job around its record's
        # writes: the heartbeat must never write "reindexing" over the final "indexed".
        self._current: dict[tuple[str, str, str], Job] = {}
        self._record_locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    # --- records
    async def _store(self) -> GalleryStore:
        return (await self.link.gallery()).store

    async def _save(self, job: Job) -> None:
        await (await self._store()).upsert(META, [job.point()])

    async def _advance(self, job: Job) -> Job:
        """Record the job's new state (stamped now) as the one its heartbeat repeats."""
        key = _key(job)
        job = replace(job, updated=datetime.now(UTC))
        async with self._record_locks.setdefault(key, asyncio.Lock()):
            self._current[key] = job
            await self._save(job)
        return job

    async def _beat(self, key: tuple[str, str, str]) -> None:
        """Rewrite the job's record every heartbeat while it waits or runs. A beat the store
        refuses is only logged: the next may pass, and a silent record reads as interrupted."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            async with self._record_locks.setdefault(key, asyncio.Lock()):
                job = self._current.get(key)
                if job is None or job.state not in (QUEUED, RUNNING):
                    return
                job = self._current[key] = replace(job, updated=datetime.now(UTC))
                try:
                    await self._save(job)
                except (GalleryError, BlobError) as exc:
                    log.warning("reindex of %s/%s with %s: heartbeat not recorded: %s",
                                job.tenant, job.collection, job.model, exc)

    async def jobs_of(self, tenant: str) -> dict[str, list[Job]]:
        """The tenant's job records by collection name, as a person should read them."""
        store = await self._store()
        found: dict[str, list[Job]] = {}
        async for page in pages(store, META, GalleryFilter(collections=(_JOBS,), tenant=tenant), page=_PAGE):
            for point in page:
                if point.tenant == tenant:
                    job = self._seen_here(_job(point))
                    found.setdefault(job.collection, []).append(job)
        return found

    def _seen_here(self, job: Job) -> Job:
        silent = datetime.now(UTC) - job.updated
        if job.state in (QUEUED, RUNNING) and not self._running(job) and silent > self.stale_after:
            return replace(job, state=INTERRUPTED,
                           reason=f"The gateway running this reindex stopped (no word from it for "
                                  f"{int(silent.total_seconds())} s) before it finished; ask for it again.")
        return job

    def _running(self, job: Job) -> bool:
        task = self._tasks.get(_key(job))
        return task is not None and not task.done()

    async def forget(self, tenant: str, name: str) -> None:
        """Stop a deleted collection's jobs here (queued or running) and drop their records.
        (A job on another replica stops at its next batch, which checks the collection.)"""
        for key, task in list(self._tasks.items()):
            if key[:2] == (tenant, name):
                self._current.pop(key, None)  # no heartbeat writes the record back
                task.cancel()
        store = await self._store()
        jobs = (await self.jobs_of(tenant)).get(name, [])
        if jobs:
            await store.delete(META, [j.point().id for j in jobs])

    # --- running
    async def start(self, tenant: str, name: str, model: str, total: int) -> Job:
        """Queue a job; 409 while the same one waits or runs, here or on another live replica."""
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
        job = await self._advance(job)
        key = _key(job)
        task = asyncio.ensure_future(self._run(job))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._ended(key, task))
        return job

    def _ended(self, key: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            self._tasks.pop(key, None)
            self._current.pop(key, None)
            self._record_locks.pop(key, None)

    async def close(self) -> None:
        """Stop every job; their records keep saying running, which the next process shows as interrupted."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job) -> None:
        heartbeat = asyncio.ensure_future(self._beat(_key(job)))
        try:
            async with self._slot:
                await self._reindex(job)
        except asyncio.CancelledError:
            raise
        except (GatewayError, GalleryError, BlobError) as exc:
            # The tenant reads the reason: a storage error's own text (an address, a bucket, a key) is logged only.
            reason = (exc if isinstance(exc, GatewayError) else storage_error(exc)).message
            log.warning("reindex of %s/%s with %s failed: %s", job.tenant, job.collection, job.model, exc)
            await self._fail(job, reason)
        except Exception:
            log.exception("reindex of %s/%s with %s failed", job.tenant, job.collection, job.model)
            await self._fail(job, "The reindex failed unexpectedly; the error was logged.")
        finally:
            heartbeat.cancel()

    async def _fail(self, job: Job, reason: str) -> None:
        try:
            await self._advance(replace(self._current.get(_key(job), job), state=FAILED, reason=reason))
        except (GalleryError, BlobError) as exc:  # the store is down: the record stops beating, shown interrupted later
            log.warning("reindex of %s/%s: its failure could not be recorded: %s", job.tenant, job.collection, exc)

    async def _reindex(self, job: Job) -> None:
        if not job.tenant and job.collection == WEB:
            await self._reindex_web(job)
            return
        gallery = await self.link.gallery()
        recs = CollectionRecords(gallery.store)
        total = await recs.count(job.tenant, job.collection)
        collection = await recs.get(job.tenant, job.collection)
        if collection is None:
            await self._abandon(job)
            return
        job = await self._advance(replace(job, state=RUNNING, total=total))
        start: str | None = None
        while True:
            page = await recs.images(job.tenant, job.collection, _PAGE, start)
            # Progress is recorded after each batch; a batch goes in Embed calls of at most batch_bytes.
            for batch in pack(page.points, max_items=self.batch_images):
                written, skipped = await self._batch(gallery, recs, collection, job, batch)
                if written < 0:
                    await self._abandon(job)  # deleted meanwhile: nothing to finish, no record to keep
                    return
                done = job.done + len(batch)
                # Images added while it runs are walked too (uploads embed with every model anyway).
                job = await self._advance(replace(job, done=done, total=max(job.total, done),
                                                  skipped=job.skipped + skipped))
            if page.next is None:
                break
            start = page.next
        # Listed as indexed only once every image has a point in the model's space; touch
        # writes nothing for a collection deleted meanwhile (it would bring it back).
        if not await recs.touch(collection, [job.model]):
            await self._abandon(job)
            return
        await self._advance(replace(job, state=INDEXED))

    # --- the web collection: colour facts for points written before them (collections/web_colour.py)
    async def start_web(self, model: str) -> Job:
        """Queue the web collection's colour backfill for ``model``'s current space."""
        space = await self._space(model)
        total = await (await self.link.gallery()).store.count(space, GalleryFilter(collections=(WEB,)))
        return await self.start("", WEB, model, total)

    async def web_job(self, model: str) -> Job | None:
        """The web collection's job record for ``model``, as a person should read it."""
        stored = await (await self._store()).retrieve(META, [Job("", WEB, model, "", _EPOCH, _EPOCH).point().id])
        return self._seen_here(_job(stored[0])) if stored else None

    async def _space(self, model: str) -> VectorSpace:
        space = await self.space_for(model) if self.space_for is not None else None
        if space is None:
            raise BackendUnavailable(f"The embed server does not say which weights {model} runs now; ask again "
                                     "in a minute.", backend="embed")
        return space

    async def _reindex_web(self, job: Job) -> None:
        """Walk the web points without colour facts, a page at a time (resumable: a page done
        leaves the walk's filter). done/total count every web point of the space, so a job
        asked again after a stop starts where the last one left off."""
        if self.downloader is None:
            raise BackendUnavailable("This gateway has no downloader for the web collection's backfill.",
                                     backend="downloader")
        gallery = await self.link.gallery()
        space = await self._space(job.model)
        total = await gallery.store.count(space, GalleryFilter(collections=(WEB,)))
        job = await self._advance(replace(job, state=RUNNING, total=total,
                                          done=total - await web_colour.left(gallery, space)))
        handled: set[str] = set()
        while True:
            step = await web_colour.step(gallery, space, self.downloader, self.limits, self.download_timeout_s)
            if not step.done:
                break
            if step.ids <= handled:  # written, yet still without colour: never loop on them
                raise GalleryError("The web points' colour facts were written but do not read back; "
                                   "the backfill stopped.")
            handled |= step.ids
            job = await self._advance(replace(job, done=min(job.total, job.done + step.done),
                                              skipped=job.skipped + step.skipped))
        if self.patches is not None:
            job = await self._web_tokens(gallery.store, space, job)
        await self._advance(replace(job, state=INDEXED, done=job.total))

    async def _web_tokens(self, store: GalleryStore, space: VectorSpace, job: Job) -> Job:
        """The second walk of the web job: patch tokens for the points without (token_backfill.py);
        done counts again from 0 over every web point, skipped adds the points left without."""
        assert self.patches is not None and self.downloader is not None
        job = await self._advance(replace(job, done=0))
        start: str | None = None
        while True:
            step = await token_backfill.step(store, space, start, self.patches, self.downloader, self.limits,
                                             self.download_timeout_s)
            job = await self._advance(replace(job, done=min(job.total, job.done + step.seen),
                                              total=max(job.total, job.done + step.seen),
                                              skipped=job.skipped + step.skipped))
            if step.next is None:
                return job
            start = step.next

    async def _abandon(self, job: Job) -> None:
        """Stop beating and drop the record of a job whose collection was deleted under it."""
        key = _key(job)
        async with self._record_locks.setdefault(key, asyncio.Lock()):
            self._current.pop(key, None)
            await (await self._store()).delete(META, [job.point().id])

    async def _batch(self, gallery: Any, recs: CollectionRecords, collection: Collection, job: Job,
                     batch: Sequence[GalleryPoint]) -> tuple[int, int]:
        """Embed and write one batch; (written, skipped: original missing or unreadable).
        written is -1 when the collection was deleted (or deleted and created again) meanwhile."""
        if not await recs.alive(collection):
            return -1, 0
        current = await self._current_records(gallery, job, batch)
        skipped = len(batch) - len(current)
        current = await self._not_current(gallery, job, current)
        ready: list[tuple[GalleryPoint, PreparedImage]] = []
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
            ready.append((record, image))
        written = 0
        # One image alone may pass the byte limit: it goes in a call of its own.
        for part in pack(ready, _data_size, max_bytes=self.batch_bytes):
            embedded = await self.embed.embed(job.model, [image.embed_bytes for _, image in part])
            space = space_of(job.model, embedded.provenance, int(embedded.vectors.shape[1]))
            if space is None:
                raise BackendUnavailable(f"The embed server did not say which weights {job.model} runs; "
                                         "nothing more was stored.", backend="embed")
            # Read again right before writing (the embed call took seconds): an image or the
            # collection deleted since must not come back.
            if not await recs.alive(collection):
                return -1, skipped
            still = {r.id for r in await self._current_records(gallery, job, [r for r, _ in part])}
            part = [(r, data) for r, data in part if r.id in still]
            # The record names the model before the point exists, so deleting the image
            # (collection_deletion.remove_images, by the record's models) never leaves
            # this point behind.
            await gallery.store.upsert(META, [replace(r, engine=_merged(r.engine, job.model), **_colour(image))
                                               for r, image in part])
            points = [GalleryPoint(r.content_hash, tuple(embedded.vectors[i].tolist()), job.collection, job.tenant,
                                   urls=r.urls, title=r.title, platform=r.platform, width=r.width, height=r.height,
                                   tags=r.tags, first_seen=r.first_seen, **_colour(image))
                      for i, (r, image) in enumerate(part)]
            await gallery.remember(space, await self._placed(space, points))
            if self.patches is not None:  # their patch tokens (issue 23); a failure leaves them for the next job
                try:
                    await self.patches(space, points, {r.content_hash: image.embed_bytes for r, image in part})
                except (GatewayError, GalleryError) as exc:
                    log.info("reindex: patch tokens not stored: %s: %s", type(exc).__name__, exc)
            if not await recs.alive(collection):
                # Deleted while this wrote: its emptying may have passed these images already.
                # Their other models' points went with it; these records and points are this
                # job's to take back (their bytes, held by nothing now, are the collector's).
                ids = [r.id for r, _ in part]
                await gallery.store.delete(space, ids)
                await gallery.store.delete(META, ids)
                return -1, skipped
            written += len(part)
        return written, skipped

    async def _not_current(self, gallery: Any, job: Job, records: list[GalleryPoint]) -> list[GalleryPoint]:
        """The records whose point in the model's current space is missing or lacks what a
        write now gives it (colour facts; placement for a text-tower model): the others are
        current, and not embedded again (a job asked again after a stop resumes)."""
        space = await self.space_for(job.model) if self.space_for is not None else None
        if space is None or not records:
            return records
        stored = {p.id: p for p in await gallery.store.retrieve(space, [r.id for r in records])}
        tagged = self.placement is not None and job.model in text_models()
        with_tokens = await TokenStore(gallery.store, self.patches.compaction).have(space, list(stored)) \
            if self.patches is not None else set(stored)

        def current(point: GalleryPoint | None) -> bool:
            return (point is not None and (point.color_scheme is not None or point.color_error is not None)
                    and (bool(point.placement) or not tagged) and point.id in with_tokens)

        return [r for r in records if not current(stored.get(r.id))]

    async def _placed(self, space: VectorSpace, points: list[GalleryPoint]) -> Sequence[GalleryPoint]:
        if self.placement is None:
            return points
        try:
            return await self.placement(space, points)
        except (GatewayError, TimeoutError) as exc:  # untagged is better than not reindexed
            log.info("reindex: placement not scored: %s: %s", type(exc).__name__, exc)
            return points

    @staticmethod
    async def _current_records(gallery: Any, job: Job, batch: Sequence[GalleryPoint]) -> list[GalleryPoint]:
        """The batch's image records as stored now: one deleted since it was listed is left out."""
        return [p for p in await gallery.store.retrieve(META, [p.id for p in batch])
                if p.tenant == job.tenant and p.collection == job.collection]


def _key(job: Job) -> tuple[str, str, str]:
    return (job.tenant, job.collection, job.model)


def _merged(engine: str, model: str) -> str:
    return ",".join(dict.fromkeys([m for m in engine.split(",") if m] + [model]))


def _data_size(item: tuple[GalleryPoint, PreparedImage]) -> int:
    return len(item[1].embed_bytes)


def _colour(image: PreparedImage) -> dict[str, Any]:
    """The colour facts read from the original (fetch/colour.py), as a point's fields."""
    facts = image.colour
    if facts is None:
        return {"color_error": "unreadable: its pixels could not be decoded"}
    return {"color_scheme": facts.scheme, "palette": facts.palette, "palette_shares": facts.shares}

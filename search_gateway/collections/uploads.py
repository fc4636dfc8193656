"""Adding images to a private collection: the inputs read from the request
(http/upload_form.py), then each input on its own (one bad input never fails the others): fetch or take the bytes,
check them as an image, embed them with every model asked (the request's images a few
per call), keep the original in the blob store and only then write the points
(blobs/writes.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from search_gateway.clients.backends import EmbedClient
from search_gateway.clients.embed_calls import embed_or_each_alone, pack
from search_gateway.clients.replies import Embeddings
from search_gateway.collections.blobs.base import BlobError, BlobStore, BlobUnavailable
from search_gateway.collections.blobs.writes import put_then_index
from search_gateway.collections.deletion import SpaceFor, remove_images
from search_gateway.collections.quota import Quota, Reservation
from search_gateway.collections.records import Collection, CollectionRecords
from search_gateway.config import GatewaySettings
from search_gateway.errors import GatewayError, UploadTooLarge, storage_error
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits, PreparedImage, prepare_in_thread
from search_gateway.gallery.base import GalleryError, GalleryPoint, GalleryUnavailable, VectorSpace
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import PatchWriter
from search_gateway.gallery.spaces import space_of
from search_gateway.gallery.writer import Tagger

log = logging.getLogger(__name__)


class _CollectionDeleted(Exception):
    """The collection was deleted while an upload into it was under way."""

# A rejection's machine-readable code where a client acts on it: the importer stops sending.
QUOTA_REACHED = "quota_reached"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Input:
    """One image to add: an uploaded file (``data``) or a URL to fetch."""

    label: str  # the file name as stored (filenames.py), or the URL
    data: bytes | None = None
    url: str | None = None
    content_type: str = "application/octet-stream"
    # Why the stored name differs from the one sent; said in the input's result.
    note: str | None = None


@dataclass(frozen=True)
class UploadResult:
    """What became of one input, as the reply says it (``json``): added, duplicate or rejected."""

    input: str  # the input's label
    status: Literal["added", "duplicate", "rejected"]
    id: str | None = None  # the image's id: added, or a duplicate of which one
    thumbnail: str | None = None  # added
    code: str | None = None  # rejected, where a client acts on it (QUOTA_REACHED)
    reason: str | None = None  # rejected: a sentence for the person
    note: str | None = None  # the input's note: why its stored name differs from the one sent

    @classmethod
    def added(cls, item: Input, id: str, thumbnail: str) -> UploadResult:
        return cls(item.label, "added", id=id, thumbnail=thumbnail, note=item.note)

    @classmethod
    def duplicate(cls, item: Input, id: str) -> UploadResult:
        return cls(item.label, "duplicate", id=id, note=item.note)

    @classmethod
    def rejected(cls, item: Input, reason: str, code: str | None = None) -> UploadResult:
        return cls(item.label, "rejected", code=code, reason=reason, note=item.note)

    def repeated_as(self, item: Input) -> UploadResult:
        """The result of ``item``, the same picture as this result's input sent again in the
        same request: a duplicate of it once added, else the same fate."""
        if self.status == "added":
            assert self.id is not None
            return UploadResult.duplicate(item, self.id)
        return replace(self, input=item.label, note=item.note)

    def json(self) -> dict[str, Any]:
        """The reply's object, its keys in this order (clients and the importer read them):
        input, status, then those set of id, thumbnail, code, reason, note."""
        out: dict[str, Any] = {"input": self.input, "status": self.status}
        for key, value in (("id", self.id), ("thumbnail", self.thumbnail), ("code", self.code),
                           ("reason", self.reason), ("note", self.note)):
            if value is not None:
                out[key] = value
        return out


@dataclass
class _Checked:
    """An input that decoded as an image and is not yet in the collection: on its way in."""

    item: Input
    data: bytes
    image: PreparedImage
    points: list[tuple[VectorSpace, GalleryPoint]] = field(default_factory=list)
    failed: UploadResult | None = None


@dataclass(frozen=True)
class UploadDeps:
    """What an upload uses, built once at start (app.py) with the gallery on."""

    settings: GatewaySettings
    quota: Quota
    downloader: Downloader
    image_limits: ImageLimits
    embed: EmbedClient
    link: GalleryLink
    space_for: SpaceFor
    blobs: BlobStore
    # Body placement tags of a model with a text tower (search/tagging.py, passed in by app.py);
    # None: uploads get none.
    placement: Tagger | None = None
    # Computes and stores each point's compact patch tokens (gallery/patch_tokens.py, issue 23);
    # None: uploads store none (the reindex's backfill adds them).
    patches: PatchWriter | None = None


class Uploader:
    """Adds inputs to one collection, for one request.

    The request's images are embedded together, a few per Embed call (the search's
    GATEWAY_EMBED_BATCH and GATEWAY_EMBED_BATCH_BYTES): one call per image left the embed
    server's batcher with batches of one per request in flight, and embedding is most of
    an upload's time (docs/benchmarks.md, "Collections").
    """

    def __init__(self, gw: UploadDeps, recs: CollectionRecords, collection: Collection, models: Sequence[str],
                 tags: Sequence[str], thumbnail: Callable[[str, str], str]) -> None:
        self.gw = gw
        self.recs = recs
        self.collection = collection
        self.models = tuple(models)
        self.tags = tuple(tags)
        self.thumbnail = thumbnail
        self.touched = False

    async def add_all(self, items: Sequence[Input]) -> list[dict[str, Any]]:
        """One result per input, in order, as the reply's JSON; one bad input never fails the others."""
        return [result.json() for result in await self.add(items)]

    async def add(self, items: Sequence[Input]) -> list[UploadResult]:
        """One result per input, in order; one bad input never fails the others."""
        # Fetching and decoding run concurrently (threads, the downloader's own bounds).
        checked = await asyncio.gather(*(self._guarded(item, self._check(item)) for item in items))
        results: list[UploadResult | None] = [None] * len(items)
        first_of: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        pending: list[tuple[int, _Checked]] = []
        for i, found in enumerate(checked):
            if isinstance(found, UploadResult):
                results[i] = found
            elif found.image.sha256 in first_of:  # the same picture twice in one request
                repeats.append((i, first_of[found.image.sha256]))
            else:
                known = await self._guarded(found.item, self.recs.image_by_hash(self.collection.tenant,
                                                                                 self.collection.name,
                                                                                 found.image.sha256))
                if isinstance(known, UploadResult):
                    results[i] = known
                elif known is not None:
                    results[i] = UploadResult.duplicate(found.item, known.id)
                else:
                    first_of[found.image.sha256] = i
                    pending.append((i, found))
        pending, reservation = await self._within_quota(pending, results)
        try:
            for model in self.models:
                await self._embed(model, [c for _, c in pending if c.failed is None])
            for i, c in pending:
                results[i] = c.failed or await self._guarded(c.item, self._write(c))
        finally:
            # The records written count from now on; the rest of the room goes back. (An
            # outage here leaves the entries to expire: they only ever err on the safe side.)
            await reservation.release()
        for i, first in repeats:
            earlier = results[first]
            assert earlier is not None
            results[i] = earlier.repeated_as(items[i])
        return [r for r in results if r is not None]

    async def _within_quota(self, pending: list[tuple[int, _Checked]],
                            results: list[UploadResult | None]) -> tuple[list[tuple[int, _Checked]], Reservation]:
        """The new images the tenant still has room for (reserved: quota.py, so requests at
        once never share the last room); the rest rejected with the reason. Images of a
        collection being deleted count until it is emptied."""
        quota = self.gw.quota
        reservation = await quota.reserve(self.recs, self.collection.tenant, [len(c.data) for _, c in pending])
        limits = quota.limits
        reason = (f"Your collections hold the most images this service keeps for one customer ({limits.images}); "
                  "delete some to add others." if reservation.full == "images" else
                  f"Your collections hold the most bytes this service keeps for one customer ({limits.bytes}); "
                  "delete some to add others.")
        for i, c in pending[reservation.granted:]:
            results[i] = UploadResult.rejected(c.item, reason, code=QUOTA_REACHED)
        return pending[:reservation.granted], reservation

    async def _guarded(self, item: Input, work: Awaitable[_T]) -> _T | UploadResult:
        try:
            return await work
        except (GalleryUnavailable, BlobUnavailable):
            raise  # an outage fails the request (503, retryable; a re-sent upload answers duplicate)
        except (GalleryError, BlobError) as exc:
            failed = storage_error(exc)
            log.warning("upload of %s: %s", item.label[:80], failed.log_detail)
            return UploadResult.rejected(item, failed.message)
        except GatewayError as exc:
            return UploadResult.rejected(item, exc.message)

    async def _check(self, item: Input) -> _Checked:
        gw = self.gw
        data = item.data
        if data is None:
            assert item.url is not None
            data = await gw.downloader.fetch(item.url, timeout=gw.settings.download_timeout_s)
        if len(data) > gw.settings.upload_max_bytes:
            raise UploadTooLarge(f"The image is over the {gw.settings.upload_max_bytes}-byte limit per image.")
        return _Checked(item, data, await prepare_in_thread(data, gw.image_limits, "image"))

    async def _embed(self, model: str, todo: list[_Checked]) -> None:
        s = self.gw.settings
        for batch in pack(todo, _embed_size, max_items=s.embed_batch, max_bytes=s.embed_batch_bytes):
            await self._embed_batch(model, batch)

    async def _embed_batch(self, model: str, batch: list[_Checked]) -> None:
        async def embed(part: Sequence[_Checked]) -> Embeddings:
            return await self.gw.embed.embed(model, [c.image.embed_bytes for c in part])

        async def embedded(part: Sequence[_Checked], reply: Embeddings) -> None:
            space = space_of(model, reply.provenance, int(reply.vectors.shape[1]))
            for c, vector in zip(part, reply.vectors, strict=True):
                if space is None:
                    c.failed = UploadResult.rejected(
                        c.item, f"The embed server did not say which weights {model} runs; nothing was stored.")
                else:
                    c.points.append((space, replace(self._record(c), vector=tuple(vector.tolist()), engine="")))

        async def refused(c: _Checked, exc: GatewayError) -> None:
            c.failed = UploadResult.rejected(c.item, exc.message)

        # Any error of the call (an outage too) is the image's own once it is alone: one
        # image the embed server refuses must not take the others with it.
        await embed_or_each_alone(batch, embed, embedded, GatewayError, refused)

    def _record(self, c: _Checked) -> GalleryPoint:
        item, image, col = c.item, c.image, self.collection
        # The colour facts read when the upload was decoded (prepare), kept on the record and its points.
        facts = image.colour
        return GalleryPoint(image.sha256, None, col.name, col.tenant, urls=(item.url,) if item.url else (),
                            title=item.label if item.data is not None else "", platform="upload",
                            width=image.width, height=image.height, engine=",".join(self.models),
                            tags=dict.fromkeys(self.tags, 1.0), bytes=len(c.data),
                            color_scheme=facts.scheme if facts else None, palette=facts.palette if facts else None,
                            palette_shares=facts.shares if facts else None)

    async def _placed(self, space: VectorSpace, point: GalleryPoint) -> list[GalleryPoint]:
        """The point with its body placement tags (text-tower models); without them when they
        cannot be scored now: an image kept untagged is better than one refused."""
        if self.gw.placement is None:
            return [point]
        try:
            return list(await self.gw.placement(space, [point]))
        except (GatewayError, TimeoutError) as exc:
            log.info("upload: placement not scored: %s: %s", type(exc).__name__, exc)
            return [point]

    async def _patch_tokens(self, space: VectorSpace, point: GalleryPoint, data: bytes) -> None:
        """The point's patch tokens (issue 23); an image stored without them is still found, keeps
        its global score in a re-ranked search, and gets them from the reindex's backfill."""
        if self.gw.patches is None:
            return
        try:
            await self.gw.patches(space, [point], {point.content_hash: data})
        except (GatewayError, GalleryError) as exc:
            log.info("upload: patch tokens not stored: %s: %s", type(exc).__name__, exc)

    async def _write(self, c: _Checked) -> UploadResult:
        gw, col = self.gw, self.collection
        record = self._record(c)
        added = False

        async def write_points() -> None:
            nonlocal added
            # A request embeds for seconds after its collection was found: the collection may
            # have been deleted since, and writing into it would bring its images back.
            if not await self.recs.alive(col):
                raise _CollectionDeleted
            gallery = await gw.link.gallery()
            for space, point in c.points:
                await gallery.remember(space, await self._placed(space, point))
                await self._patch_tokens(space, point, c.image.embed_bytes)
            # Of uploads of one picture at once, one record wins: the others are duplicates
            # (their points were the same points, written again).
            added = await self.recs.add_image(record)
            if not self.touched:
                self.touched = True
                await self.recs.touch(col, self.models)
            if not await self.recs.alive(col):  # deleted while this wrote: its emptying may have passed it
                await remove_images(self.recs.store, gw.space_for, self.recs, gw.blobs, [record],
                                    release_grace_s=gw.settings.blobs_release_grace_s)
                raise _CollectionDeleted

        try:
            await put_then_index(gw.blobs, c.image.sha256, c.data, c.item.content_type, write_points)
        except _CollectionDeleted:
            # Its bytes, if nothing else holds them, are the collector's after the grace.
            return UploadResult.rejected(
                c.item, "The collection was deleted while this upload ran; the image was not kept.")
        if not added:
            return UploadResult.duplicate(c.item, record.id)
        return UploadResult.added(c.item, record.id, self.thumbnail(col.tenant, c.image.sha256))


def _embed_size(c: _Checked) -> int:
    return len(c.image.embed_bytes)

"""Adding images to a private collection: read the multipart inputs within limits, then
each input on its own (one bad input never fails the others): fetch or take the bytes,
check them as an image, embed them with every model asked, keep the original in the
blob store and only then write the points (blobs/writes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from search_gateway.blobs.writes import put_then_index
from search_gateway.collections import Collection, CollectionRecords
from search_gateway.config import GatewaySettings
from search_gateway.errors import BadRequest, GatewayError, UploadTooLarge
from search_gateway.gallery.base import GalleryError, GalleryPoint
from search_gateway.images import prepare_in_thread
from search_gateway.search.gallery_source import space_of

MAX_TAGS = 16


@dataclass(frozen=True)
class Input:
    """One image to add: an uploaded file (``data``) or a URL to fetch."""

    label: str
    data: bytes | None = None
    url: str | None = None
    content_type: str = "application/octet-stream"


async def read_inputs(request: Request, s: GatewaySettings) -> tuple[list[Input], tuple[str, ...], tuple[str, ...]]:
    """The inputs in order, the tags and the models asked; 413 naming the limit that was passed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("Send the images as multipart/form-data: 'file' fields and/or 'url' fields.")
    try:
        form = await request.form(max_files=s.collection_max_files, max_fields=s.collection_max_files + 32,
                                  max_part_size=64 * 1024)
    except HTTPException as exc:
        if "Too many" in str(exc.detail):
            raise UploadTooLarge(f"At most {s.collection_max_files} images per request "
                                 "(GATEWAY_COLLECTION_MAX_FILES); send the rest in another request.") from None
        raise BadRequest(f"The multipart body could not be read: {exc.detail}") from None
    try:
        inputs: list[Input] = []
        tags: list[str] = []
        models: list[str] = []
        for key, value in form.multi_items():
            if key == "file":
                if not isinstance(value, UploadFile):
                    raise BadRequest("A 'file' field must be a file upload, not a text value.")
                inputs.append(Input(value.filename or f"file {len(inputs) + 1}", data=await value.read(),
                                    content_type=value.content_type or "application/octet-stream"))
            elif key == "url" and isinstance(value, str):
                inputs.append(Input(value[:200], url=value.strip()))
            elif key == "tags" and isinstance(value, str):
                tags.extend(t.strip().lower() for t in value.split(",") if t.strip())
            elif key == "embedding_model" and isinstance(value, str):
                models.append(value.strip())
            else:
                raise BadRequest(f"Unknown field {key[:40]!r}; the fields are file, url, tags and embedding_model.")
    finally:
        await form.close()
    if len(inputs) > s.collection_max_files:
        raise UploadTooLarge(f"At most {s.collection_max_files} images per request (GATEWAY_COLLECTION_MAX_FILES).")
    if not inputs:
        raise BadRequest("Send at least one 'file' or 'url' field.")
    if len(set(tags)) > MAX_TAGS or any(len(t) > 64 for t in tags):
        raise BadRequest(f"At most {MAX_TAGS} tags of at most 64 characters each.")
    return inputs, tuple(dict.fromkeys(tags)), tuple(dict.fromkeys(models))


class Uploader:
    """Adds inputs to one collection, for one request."""

    def __init__(self, gw: Any, recs: CollectionRecords, collection: Collection, models: Sequence[str],
                 tags: Sequence[str], thumbnail: Callable[[str, str], str]) -> None:
        self.gw = gw
        self.recs = recs
        self.collection = collection
        self.models = tuple(models)
        self.tags = tuple(tags)
        self.thumbnail = thumbnail
        self.touched = False

    async def add(self, item: Input) -> dict[str, Any]:
        try:
            return await self._add(item)
        except GalleryError as exc:
            return {"input": item.label, "status": "rejected", "reason": f"The gallery store failed: {exc}"}
        except GatewayError as exc:
            return {"input": item.label, "status": "rejected", "reason": exc.message}

    async def _add(self, item: Input) -> dict[str, Any]:
        gw, c = self.gw, self.collection
        data = item.data
        if data is None:
            assert item.url is not None
            data = await gw.downloader.fetch(item.url, timeout=gw.settings.download_timeout_s)
        if len(data) > gw.settings.upload_max_bytes:
            raise UploadTooLarge(f"The image is over the {gw.settings.upload_max_bytes}-byte limit per image.")
        image = await prepare_in_thread(data, gw.image_limits, "image")
        known = await self.recs.image_by_hash(c.tenant, c.name, image.sha256)
        if known is not None:
            return {"input": item.label, "status": "duplicate", "id": known.id}
        record = GalleryPoint(image.sha256, None, c.name, c.tenant, urls=(item.url,) if item.url else (),
                              title=item.label if item.data is not None else "", platform="upload",
                              width=image.width, height=image.height, engine=",".join(self.models),
                              tags=dict.fromkeys(self.tags, 1.0))
        spaced = []
        for model in self.models:
            embedded = await gw.embed.embed(model, [image.embed_bytes])
            space = space_of(model, embedded.provenance, int(embedded.vectors.shape[1]))
            if space is None:
                raise BadRequest(f"The embed server did not say which weights {model} runs; nothing was stored.")
            spaced.append((space, GalleryPoint(image.sha256, tuple(embedded.vectors[0].tolist()), c.name, c.tenant,
                                               urls=record.urls, title=record.title, platform="upload",
                                               width=image.width, height=image.height, tags=record.tags)))

        async def write_points() -> None:
            gallery = await gw.gallery.link.gallery()
            for space, point in spaced:
                await gallery.remember(space, [point])
            await self.recs.add_image(record)
            if not self.touched:
                self.touched = True
                await self.recs.touch(c, self.models)

        await put_then_index(gw.blobs, image.sha256, data, item.content_type, write_points)
        return {"input": item.label, "status": "added", "id": record.id,
                "thumbnail": self.thumbnail(c.tenant, image.sha256)}

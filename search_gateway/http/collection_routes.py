"""HTTP handlers of private collections: list, create, delete, upload images, get and delete one.

Another tenant's collection does not exist for a caller: every lookup is by (tenant,
name), so it answers 404 exactly like a name nobody used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from search_gateway.collections.blobs.base import BlobNotFound
from search_gateway.collections.deletion import remove_images
from search_gateway.collections.records import PAGE, Collection, CollectionRecords, bad_name
from search_gateway.collections.reindex import INDEXED, Job
from search_gateway.collections.uploads import Uploader
from search_gateway.errors import BadRequest, Conflict, NotFound, QuotaReached, storage_error
from search_gateway.gallery.base import GalleryError, GalleryPoint
from search_gateway.gallery.spaces import WEB
from search_gateway.http.deps import collection_deps
from search_gateway.http.thumbnails import INVALID, blob_parts, blob_url
from search_gateway.http.upload_form import read_inputs
from search_gateway.tenants import tenant_of


async def records(request: Request) -> CollectionRecords:
    gw = collection_deps(request)  # the gallery off: 404, said once, there
    try:
        gallery = await gw.gallery.link.gallery()
    except GalleryError as exc:
        raise storage_error(exc) from exc
    return CollectionRecords(gallery.store)


def _missing(name: str) -> NotFound:
    return NotFound(f"There is no collection {name[:60]!r}.")


async def _owned(request: Request, recs: CollectionRecords) -> Collection:
    name = request.path_params["name"]
    found = await recs.get(tenant_of(request.scope), name) if bad_name(name) is None else None
    if found is None:
        raise _missing(name)
    return found


async def searched(request: Request, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The ``collections`` a search asked for (search_params.parse: without repeats, at most
    MAX_SEARCHED), each checked to be ``web`` or the caller's; None (not given): web and
    every collection of the caller. 404 names the first unknown."""
    if names is None:
        return None
    private = [n for n in names if n != WEB]
    if private:
        collection_deps(request, NotFound(f"There is no collection {private[0][:60]!r}: private collections need "
                                          "the gallery, which is off on this gateway (GATEWAY_GALLERY=off)."))
        recs = await records(request)
        tenant = tenant_of(request.scope)
        for name in private:
            if bad_name(name) is not None or await recs.get(tenant, name) is None:
                raise _missing(name)
    return names


def _describe(c: Collection, images: int, jobs: list[Job] | None = None) -> dict[str, Any]:
    # Per model: indexed, or what its last reindex job says (running with done/total,
    # failed with a reason, interrupted by a restart).
    index: dict[str, Any] = {m: {"state": INDEXED} for m in c.models}
    for job in jobs or ():
        if job.state != INDEXED or job.model not in index:
            index[job.model] = job.describe()
    return {"name": c.name, "images": images, "models": list(c.models), "index": index,
            "created": c.created.isoformat(), "updated": c.updated.isoformat()}


async def list_collections(request: Request) -> Response:
    recs = await records(request)
    tenant = tenant_of(request.scope)
    gw = collection_deps(request)
    jobs = await gw.reindex.jobs_of(tenant)
    collections = await recs.of_tenant(tenant)
    counts = await recs.image_counts(tenant, [c.name for c in collections])  # one query, however many
    mine = [_describe(c, counts[c.name], jobs.get(c.name)) for c in collections]
    limits = gw.quota.limits
    usage = await recs.usage(tenant)
    return JSONResponse({"collections": [{"name": WEB, "shared": True}, *mine],
                         "usage": {"images": usage.images, "max_images": limits.images or None,
                                   "bytes": usage.bytes, "max_bytes": limits.bytes or None,
                                   "collections": len(collections), "max_collections": limits.collections or None}})


async def reindex_collection(request: Request) -> Response:
    """Embed the collection's originals with another model (or its new weights) in the
    background: 202 at once, progress in GET /collections."""
    recs = await records(request)
    gw = collection_deps(request)
    if request.path_params.get("name", WEB) == WEB:  # /collections/web/reindex has no {name}
        # The public web collection: its points' colour facts, re-read from their URLs
        # (collections/web_colour.py); GET on the same path shows the job.
        job = await gw.reindex.start_web(await _reindex_model(request))
        return JSONResponse({"collection": WEB, "model": job.model, **job.describe()}, status_code=202)
    collection = await _owned(request, recs)
    model = await _reindex_model(request)
    total = await recs.count(collection.tenant, collection.name)
    job = await gw.reindex.start(collection.tenant, collection.name, model, total)
    return JSONResponse({"collection": collection.name, "model": model, **job.describe()}, status_code=202)


async def _reindex_model(request: Request) -> str:
    gw = collection_deps(request)
    model = (request.query_params.get("embedding_model") or "").strip()
    if not model:
        names = ", ".join(await gw.catalog.names())
        raise BadRequest(f"Name the model to embed with: ?embedding_model=<one of {names}>.")
    await gw.catalog.require(model)
    return model


async def web_reindex_job(request: Request) -> Response:
    """GET /collections/web/reindex?embedding_model=: the web collection's colour backfill, its progress."""
    gw = collection_deps(request)
    model = await _reindex_model(request)
    job = await gw.reindex.web_job(model)
    if job is None:
        raise NotFound(f"No reindex of the web collection with {model} was asked; POST to this path starts one.")
    return JSONResponse({"collection": WEB, "model": model, **job.describe()})


class NewCollection(BaseModel):
    """POST /collections: other fields are ignored; the name's rules are bad_name's (its own sentences)."""

    name: StrictStr


class Hashes(BaseModel):
    """POST /collections/{name}/hashes: the count and the form are checked after (their own sentences)."""

    sha256: list[StrictStr]


Body = TypeVar("Body", bound=BaseModel)


def _json_body(model: type[Body], raw: bytes, example: str, required: str) -> Body:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest(f"Send a JSON body such as {example}.") from None
    try:
        return model.model_validate(payload)
    except ValidationError:
        raise BadRequest(f"Send a JSON body such as {example}: {required}.") from None


async def create_collection(request: Request) -> Response:
    recs = await records(request)
    example = '{"name": "flash-2024"}'
    name = _json_body(NewCollection, await request.body(), example,
                      'the field "name" (a string) is required').name
    problem = bad_name(name)
    if problem:
        raise BadRequest(problem)
    tenant = tenant_of(request.scope)
    quota = collection_deps(request).quota
    async with quota.turn(tenant):
        # Created only where no record is (of creates of one name at once, one wins), then
        # counted: past the limit it is taken back, so replicas at once never pass it.
        created = await recs.create(tenant, name)
        if created is None:
            existing = await recs.find(tenant, name)
            if existing is not None and existing.deleting:
                raise Conflict(f"A collection named {name!r} was deleted and is still being emptied; "
                               "its name is free again once it is: try again later.")
            raise Conflict(f"The collection {name!r} already exists.")
        limit = quota.limits.collections
        if limit and await recs.count_collections(tenant) > limit:
            await recs.forget(tenant, name)
            raise QuotaReached(f"You have the most collections this service keeps for one customer ({limit}); "
                               "delete one to create another.")
    return JSONResponse(_describe(created, 0), status_code=201)


async def delete_collection(request: Request) -> Response:
    """Gone for the caller at once (searches, listings, every route); emptied in the
    background (collections/deletion.py)."""
    recs = await records(request)
    collection = await _owned(request, recs)
    await collection_deps(request).deleter.delete(collection)
    return Response(status_code=204)


async def add_images(request: Request) -> Response:
    recs = await records(request)
    collection = await _owned(request, recs)
    gw = collection_deps(request)
    inputs, tags, models = await read_inputs(request, gw.settings)
    for model in models:
        await gw.catalog.require(model)
    uploader = Uploader(gw.uploads, recs, collection, models or await gw.catalog.names(), tags, _thumbnail_path(request))
    results = await uploader.add_all(inputs)  # each says when its input's name was changed (note)
    return JSONResponse({"collection": collection.name, "results": results})


# Per POST /collections/{name}/hashes: the bulk importer asks in batches of at most this many.
MAX_HASHES = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")


async def present_hashes(request: Request) -> Response:
    """Which of the given SHA-256 content hashes the collection already holds: the importer
    skips those files without uploading them."""
    recs = await records(request)
    collection = await _owned(request, recs)
    example = '{"sha256": ["<64 hex digits>", ...]}'
    hashes = _json_body(Hashes, await request.body(), example,
                        "the field 'sha256' (a list of strings) is required").sha256
    if len(hashes) > MAX_HASHES:
        raise BadRequest(f"At most {MAX_HASHES} hashes per request; ask for the rest in another request.")
    wanted = [h.lower() for h in hashes]
    bad = next((h for h in wanted if not _SHA256.fullmatch(h)), None)
    if bad is not None:
        raise BadRequest(f"A SHA-256 hash is 64 hex digits; {bad[:80]!r} is not.")
    present = await recs.present(collection.tenant, collection.name, wanted)
    return JSONResponse({"present": present})


def _thumbnail_path(request: Request) -> Callable[[str, str], str]:
    """Links to originals of the collection the request names (every caller is a route
    under /collections/{name}/, the name already checked to be the caller's): a link
    stands for that image record, and answers while the tenant holds the picture."""
    signer = collection_deps(request).signer
    collection = request.path_params["name"]

    def link(tenant: str, sha256: str) -> str:
        return str(request.url_for("thumbnail", token=signer.sign(blob_url(tenant, collection, sha256))).path)

    return link


async def get_image(request: Request) -> Response:
    recs = await records(request)
    collection = await _owned(request, recs)
    image = await recs.image(collection.tenant, collection.name, request.path_params["id"])
    if image is None or await _orphans(request, collection.tenant, [image]):
        raise NotFound("There is no such image in this collection.")
    return JSONResponse({
        "id": image.id, "collection": collection.name, "sha256": image.content_hash,
        "width": image.width, "height": image.height, "filename": image.title, "urls": list(image.urls),
        "tags": sorted(image.tags), "models": [m for m in image.engine.split(",") if m],
        "added": image.first_seen.isoformat() if image.first_seen else None,
        "thumbnail": _thumbnail_path(request)(collection.tenant, image.content_hash),
    })


async def delete_image(request: Request) -> Response:
    recs = await records(request)
    collection = await _owned(request, recs)
    image = await recs.image(collection.tenant, collection.name, request.path_params["id"])
    if image is None:
        raise NotFound("There is no such image in this collection.")
    gw = collection_deps(request)
    await remove_images(recs.store, gw.gallery.space_for, recs, gw.blobs, [image],
                        release_grace_s=gw.settings.blobs_release_grace_s)
    return Response(status_code=204)


# GET /collections/{name}/images: a page holds this many images unless ?limit= asks otherwise.
LIST_DEFAULT = 200


async def list_images(request: Request) -> Response:
    """A page of the collection's images with signed thumbnail links (the web page's grid), in
    a stable order; ``next`` is the ``cursor`` of the following page (null on the last), and
    ``total`` says how many the collection holds."""
    recs = await records(request)
    collection = await _owned(request, recs)
    limit = _list_limit(request.query_params.get("limit"))
    # An empty cursor= is refused too, not read as "the first page": a client that lost the
    # previous page's 'next' must not start over silently (the description says uuid).
    cursor = request.query_params.get("cursor")
    if cursor is not None and not CURSOR.fullmatch(cursor):
        raise BadRequest("Parameter 'cursor' takes the 'next' value of the previous page, unchanged.")
    page = await recs.images(collection.tenant, collection.name, limit, cursor)
    orphans = await _orphans(request, collection.tenant, page.points)
    images = [p for p in page.points if p.content_hash not in orphans]
    link = _thumbnail_path(request)
    total = await recs.count(collection.tenant, collection.name) - len(orphans)
    return JSONResponse({"collection": collection.name, "total": max(total, len(images)), "next": page.next,
                         "images": [{"id": p.id, "filename": p.title, "thumbnail": link(collection.tenant, p.content_hash),
                                     "added": p.first_seen.isoformat() if p.first_seen else None} for p in images]})


# A cursor is a point id (a UUID), handed out by the previous page.
CURSOR = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _list_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return LIST_DEFAULT
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE:
        raise BadRequest(f"Parameter 'limit' is a whole number from 1 to {PAGE}, not {raw[:40]!r}.")
    return int(raw)


async def _orphans(request: Request, tenant: str, images: list[GalleryPoint]) -> set[str]:
    """The hashes of ``images`` whose original is missing (never shown: no thumbnail could
    be drawn), scheduled for removal."""
    originals = collection_deps(request).originals
    if not images:
        return set()
    missing: set[str] = await originals.missing(p.content_hash for p in images)
    if missing:
        originals.remove_later(tenant, missing)
    return missing


async def blob_thumbnail(request: Request, target: str) -> bytes:
    """The original a private link (thumbnails.blob_url) stands for, while the caller's
    tenant holds that picture in a live collection.

    The one check for every private thumbnail. Every refusal is the same 404 with the same
    sentence: another tenant's link, an image or collection deleted since (its bytes may
    still be kept for another tenant, or for the collector's grace), or bytes gone, all
    read like a link that never existed, so a link says nothing about what others hold."""
    gw = collection_deps(request, NotFound(INVALID))
    parts = blob_parts(target)
    if parts is None or parts[0] != tenant_of(request.scope):
        raise NotFound(INVALID)
    tenant, collection, sha256 = parts
    if not await (await records(request)).holds(tenant, collection, sha256):
        raise NotFound(INVALID)
    try:
        data: bytes = await gw.blobs.get(sha256)
    except BlobNotFound:
        raise NotFound(INVALID) from None
    return data  # an outage (BlobUnavailable) is a 503 to retry, not a 404 that says it is gone

"""HTTP handlers. They parse and validate, call the pipeline or a backend, and shape JSON.

Errors are raised, never answered here: ``errors.to_response`` does that in one place.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from search_gateway.clients.replies import PatchMatches
from search_gateway.collections.blobs.base import BlobError
from search_gateway.errors import (
    BadRequest,
    GatewayError,
    MissingField,
    RerankNeedsImage,
    UploadTooLarge,
    to_response,
)
from search_gateway.fetch.images import decode_rgb, prepare_in_thread
from search_gateway.fetch.images import thumbnail as make_thumbnail
from search_gateway.http import search_json, search_params
from search_gateway.http.collection_routes import blob_thumbnail
from search_gateway.http.collection_routes import searched as searched_collections
from search_gateway.http.deps import ops_deps, search_deps
from search_gateway.http.feedback_routes import query_ref
from search_gateway.http.openapi import openapi_document
from search_gateway.http.thumbnails import BLOB, blob_url, kept_parts, kept_url
from search_gateway.search import attention
from search_gateway.search.types import RankedResult, SearchEvent, SearchOutcome, SearchQuery
from search_gateway.tenants import tenant_of

log = logging.getLogger(__name__)

def _param(request: Request, form: Mapping[str, Any] | None, name: str) -> str | None:
    """Query parameters first, form fields second (/analyze-attention's few parameters)."""
    value = request.query_params.get(name)
    if value is None and form is not None:
        field = form.get(name)
        value = field if isinstance(field, str) else None
    return value


def _bool(request: Request, form: Mapping[str, Any] | None, name: str, default: bool) -> bool:
    raw = _param(request, form, name)
    return default if raw is None else search_params.boolean_text(raw, name)


async def _upload(form: FormData, name: str, limit: int, *, required: bool = True) -> bytes | None:
    field = form.get(name)
    if field is None:
        if required:
            raise MissingField(f"The multipart field {name!r} (an image file) is required.")
        return None
    if not isinstance(field, UploadFile):
        raise BadRequest(f"The field {name!r} must be a file upload, not a text value.")
    data = await field.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"The upload is over the {limit}-byte limit.")
    return data


async def _form(request: Request) -> FormData | None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return None
    # Small limits for everything but the one upload: a form is not a data store.
    return await request.form(max_files=2, max_fields=16, max_part_size=64 * 1024)


async def _search_query(request: Request) -> SearchQuery:
    """Parse the search (search_params: pure), then what needs a backend, in the order
    these checks have always run: the collections named, the upload, the model."""
    gw = search_deps(request)
    s = gw.settings
    form = await _form(request)
    try:
        body: Mapping[str, Any] | None = form
        if form is None and request.headers.get("content-type", "").startswith("application/json"):
            body = search_params.json_fields(await request.body())
        params = search_params.parse(request.query_params, body, search_params.Setup.of(s))
        collections = await searched_collections(request, params.collections)
        query = functools.partial(SearchQuery, model=params.model, max_results=params.max_results,
                                  sources=params.sources, min_score=params.min_score, tags=params.tags,
                                  tenant=tenant_of(request.scope), collections=collections,
                                  positive=params.positive, negative=params.negative,
                                  color=params.color, palette=params.palette, placement=params.placement)
        data = await _upload(form, "file", s.upload_max_bytes, required=False) if form is not None else None
        text = params.text if data is None else None
        if params.like is not None:
            # 'like' is the query when given; an image or text sent along is not used
            # (documented: a client switching to "more like this" may keep its form).
            if params.rerank_k:
                raise RerankNeedsImage("Parameter 'rerank' needs a query image: 'like' searches by a stored vector, "
                                 "with no image whose patches could re-rank the results.")
            await gw.catalog.require(params.model)
            return query(include_attention=False, like=params.like)
        if data is None and text is None and params.positive:
            # Marks alone: the refined query is built from them (search/refine.py).
            if params.rerank_k:
                raise RerankNeedsImage("Parameter 'rerank' needs a query image: marked results alone have no "
                                       "image whose patches could re-rank the results.")
            await gw.catalog.require(params.model)
            return query(include_attention=False)
        if data is None and text is None and params.negative:
            raise BadRequest("Parameter 'negative' alone gives nothing to search for: send a query (an image, "
                             "'text' or 'like') or at least one 'positive' result id with it.")
        if data is None and text is None:
            raise MissingField("Send the query image in the multipart field 'file' (or a 'text' field for text "
                               "search, or 'like' with a gallery image id).")
        if data is not None:
            await gw.catalog.require(params.model)
            image = await prepare_in_thread(data, gw.image_limits, "uploaded image")
            return query(include_attention=params.include_attention, image=image,
                         rerank_k=params.rerank_k or params.rerank_default_k,
                         rerank_stored_only=not params.rerank_k and bool(params.rerank_default_k))
        text = " ".join((text or "").split())
        if not text or len(text) > 300:
            raise BadRequest("The 'text' query must be 1 to 300 characters.")
        if params.rerank_k:
            raise RerankNeedsImage("Parameter 'rerank' needs a query image: a text query has no patches to compare.")
        await gw.catalog.require(params.model, text=True)
        return query(include_attention=False, text=text)
    finally:
        if form is not None:
            await form.close()


def _body(request: Request, outcome: SearchOutcome) -> dict[str, Any]:
    """The reply body, with a signed thumbnail link for each result and the query_ref for POST /feedback."""
    return {**search_json.outcome(outcome, _thumbnail_link(request)), "query_ref": query_ref(request, outcome)}


def _thumbnail_link(request: Request) -> search_json.ThumbnailLink:
    signer = search_deps(request).signer

    def thumbnail_link(result: RankedResult) -> str:
        if result.tenant is not None:  # a private collection's original, from the blob store
            token = signer.sign(blob_url(result.tenant, result.collection, result.sha256))
        elif result.thumbnail:  # a web point's kept thumbnail, public like the point; the source as fallback
            token = signer.sign(kept_url(result.thumbnail, result.candidate.url), dict(result.candidate.headers))
        else:
            token = signer.sign(result.candidate.url, dict(result.candidate.headers))
        return str(request.url_for("thumbnail", token=token).path)

    return thumbnail_link


async def search(request: Request) -> Response:
    query = await _search_query(request)
    outcome = await search_deps(request).pipeline.run(query)
    return JSONResponse(_body(request, outcome))


async def search_stream(request: Request) -> Response:
    query = await _search_query(request)  # bad requests still get a plain 4xx, before streaming
    gw = search_deps(request)
    events: asyncio.Queue[SearchEvent] = asyncio.Queue(maxsize=1000)
    thumbnail_link = _thumbnail_link(request)

    def emit(event: SearchEvent) -> None:
        # Progress is best effort: a slow reader loses intermediate events, never the final one.
        if not events.full():
            events.put_nowait(event)

    async def lines() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(gw.pipeline.run(query, emit))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield _line(search_json.event(getter.result(), thumbnail_link))
                    continue
                getter.cancel()
                while not events.empty():
                    yield _line(search_json.event(events.get_nowait(), thumbnail_link))
                try:
                    final = {"event": "final", **_body(request, task.result())}
                except Exception as exc:  # the status line is sent; report the error in-band
                    response = to_response(exc)
                    final = {"event": "error", "status": response.status_code, **json.loads(bytes(response.body))}
                yield _line(final)
                return
        finally:
            task.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


async def analyze_attention(request: Request) -> Response:
    gw = search_deps(request)
    s = gw.settings
    form = await _form(request)
    try:
        if form is None:
            raise MissingField("Send the query image in the multipart field 'query_file'.")
        candidate_url = _param(request, form, "candidate_url")
        if not candidate_url:
            raise MissingField("The parameter 'candidate_url' is required.")
        model = _param(request, form, "embedding_model") or s.default_model
        visualise = _bool(request, form, "include_visualizations", True)
        data = await _upload(form, "query_file", s.upload_max_bytes)
    finally:
        if form is not None:
            await form.close()
    await gw.catalog.require(model)
    assert data is not None
    query = await prepare_in_thread(data, gw.image_limits, "uploaded image")
    raw = await gw.downloader.fetch(candidate_url, timeout=s.download_timeout_s)
    candidate = await prepare_in_thread(raw, gw.image_limits, "candidate image")
    reply = await gw.embed.cross_attention(model, query.embed_bytes, [candidate.embed_bytes], top_k=5,
                                           include_similarity_matrix=visualise)
    patches = reply.candidates[0]
    (qh, qw), (ch, cw) = patches.query_grid, patches.grid
    matches = attention.correspondences(patches, limit=10)
    body: dict[str, Any] = {
        "query_image_size": [query.width, query.height],
        "candidate_image_size": [candidate.width, candidate.height],
        "candidate_url": candidate_url,
        "embedding_model": model,
        "similarity_analysis": {
            "overall_similarity": round(patches.overall_similarity, 6),
            "global_similarity": round(patches.global_similarity, 6),
            **attention.summary_of(patches.max_similarity),
        },
        "attention_matrix_shape": [qh * qw, ch * cw],
        "query_grid": [qh, qw],
        "candidate_grid": [ch, cw],
        "top_correspondences": matches,
    }
    if visualise:
        body["visualizations"] = await asyncio.to_thread(
            _pictures, query.embed_bytes, candidate.embed_bytes, patches, matches, s.max_pixels)
    return JSONResponse(body)


def _pictures(query: bytes, candidate: bytes, patches: PatchMatches, matches: list[dict[str, Any]],
              max_pixels: int) -> dict[str, str]:
    q_img = decode_rgb(query, max_pixels=max_pixels, max_side=512)
    c_img = decode_rgb(candidate, max_pixels=max_pixels, max_side=512)
    return {
        "attention_heatmap": attention.png_data_url(attention.heatmap_picture(q_img, c_img, patches)),
        "top_correspondences": attention.png_data_url(
            attention.correspondence_picture(q_img, c_img, patches, matches)),
    }


async def list_models(request: Request) -> Response:
    gw = ops_deps(request)
    described = await gw.catalog.models(refresh=True)
    models = []
    for m in described:
        models.append({
            "name": m.name, "architecture": m.architecture, "global_dim": m.global_dim,
            "patch_dim": m.patch_dim, "patch_size": m.patch_size,
            "grid": list(m.grid), "image_size": m.image_size,
            "supports_text": m.supports_text, "state": m.state,
            "weights": m.weights, "runtime": m.runtime,
            "device": m.device, "precision": m.precision,
            **({"error": _model_error(m.name, m.error)} if m.error else {}),
        })
    return JSONResponse({"models": models, "default_model": gw.settings.default_model})


_logged_model_errors: set[tuple[str, str]] = set()


def _model_error(name: str, error: str) -> str:
    """A plain sentence for the reply; the embed server's text (paths, exception names) goes to the log, once."""
    if (name, error) not in _logged_model_errors and len(_logged_model_errors) < 256:
        _logged_model_errors.add((name, error))
        log.warning("embed server reports model %s failed: %s", name, error)
    return "The model failed to load; the embed server's log has the reason."


async def health(request: Request) -> Response:
    return JSONResponse({"status": "healthy"})


async def ready(request: Request) -> Response:
    gw = ops_deps(request)
    default = gw.settings.default_model

    async def model_ready() -> bool:
        try:
            return any(m.name == default and m.ready for m in await gw.catalog.models(refresh=True))
        except GatewayError:
            return False

    embed_ok, scraper_ok, model_ok = await asyncio.gather(
        gw.embed.check_health(), gw.scraper.check_health(), model_ready())
    checks = {"embed_server": embed_ok, "scraper": scraper_ok, f"model:{default}": model_ok}
    ready = all(checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
    for probe in gw.probes:  # reported, not required (app.py says why)
        ok = await probe.check()
        checks[probe.name] = ok
        if not ok:
            body.setdefault("degraded", {})[probe.name] = probe.degraded
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


async def metrics_text(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=metrics.content_type)


async def openapi(request: Request) -> Response:
    gw = ops_deps(request)
    return JSONResponse(openapi_document(gw.settings, await gw.catalog.names()))


async def _kept_thumbnail(request: Request, sha256: str) -> bytes | None:
    """A web point's kept thumbnail, or None (none kept, collected since, or the store failing:
    the route then fetches the source as it did before thumbnails were kept)."""
    store = search_deps(request).thumbnails
    if store is None:
        return None
    try:
        return await store.get(sha256)
    except BlobError as exc:
        log.info("kept thumbnail %s not served: %s", sha256[:12], exc)
        return None


async def thumbnail(request: Request) -> Response:
    gw = search_deps(request)
    s = gw.settings
    url, headers = gw.signer.verify(request.path_params["token"])
    size = search_params.integer_text(request.query_params.get("size"), "size", 256, 16, s.thumbnail_max_side)
    kept = kept_parts(url)
    if kept is not None:
        webp = await _kept_thumbnail(request, kept[0])
        if webp is not None:  # as kept (256 px WebP), whatever size was asked
            return Response(webp, media_type="image/webp", headers={"Cache-Control": "private, max-age=3600"})
        url = kept[1]  # gone from the store: the source, as before thumbnails were kept
    if url.startswith(BLOB):  # an uploaded original: for its tenant, while it holds the picture
        raw = await blob_thumbnail(request, url)
    else:
        raw = await gw.downloader.fetch(url, headers, timeout=s.download_timeout_s)
    jpeg = await asyncio.to_thread(make_thumbnail, raw, max_pixels=s.max_pixels, max_side=size)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

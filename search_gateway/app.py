"""``create_app(settings)``: the Starlette application, its middlewares and its lifespan.

The lifespan opens one long-lived gRPC channel per backend and one HTTP connection
pool for downloads, and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_gateway import errors
from search_gateway.clients.backends import EmbedClient, ScraperClient, embed_channel, scraper_channel
from search_gateway.clients.models import ModelCatalog
from search_gateway.collections.blob_collector import BlobCollector
from search_gateway.collections.blobs.base import BlobStore
from search_gateway.collections.deletion import CollectionDeleter
from search_gateway.collections.link_checker import LinkChecker
from search_gateway.collections.orphans import Originals
from search_gateway.collections.point_sweep import PointSweep, configured_tenants, served_spaces
from search_gateway.collections.quota import Limits, Quota
from search_gateway.collections.reindex import Reindexer
from search_gateway.collections.tenant_migration import migrate_until_done, planned_moves
from search_gateway.collections.uploads import UploadDeps
from search_gateway.collections.web_thumbnails import WebThumbnails
from search_gateway.config import GatewaySettings
from search_gateway.feedback.query_refs import QueryRefs
from search_gateway.fetch.downloader import Downloader, DownloadLimits
from search_gateway.fetch.failed_downloads import FailedDownloads
from search_gateway.fetch.images import ImageLimits
from search_gateway.fetch.netguard import parse_allowlist
from search_gateway.gallery.patch_tokens import PatchWriter, link_store
from search_gateway.http import collection_routes, feedback_routes, routes, web
from search_gateway.http.access import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    ClientIdentity,
    RateLimitMiddleware,
    TokenBuckets,
)
from search_gateway.http.deps import CollectionDeps, Deps, OpsDeps, Probe, SearchDeps
from search_gateway.http.request_ids import RequestIdMiddleware
from search_gateway.http.thumbnails import ThumbnailSigner
from search_gateway.metrics import Metrics
from search_gateway.requestid import install_log_stamp
from search_gateway.search.cache import EmbeddingCache
from search_gateway.search.caption import CaptionChain, Captioner, RemoteCaptioner, ZeroShotCaptioner
from search_gateway.search.download import CandidateDownloads
from search_gateway.search.embedding import BatchLimits, EmbedBatches
from search_gateway.search.pipeline import SearchLimits, SearchPipeline
from search_gateway.wiring import open_feedback, open_gallery

log = logging.getLogger(__name__)

# Multipart framing around an upload; the body limit allows for it.
_FORM_OVERHEAD = 64 * 1024


def _captions(settings: GatewaySettings, embed: EmbedClient) -> CaptionChain:
    chain: list[tuple[str, Captioner]] = []
    if settings.caption_mode == "remote":
        chain.append(("remote", RemoteCaptioner(settings.caption_url, settings.caption_remote_model, settings.caption_token)))
    if settings.caption_mode in ("remote", "offline"):
        chain.append(("offline", ZeroShotCaptioner(embed, settings.caption_model)))
    return CaptionChain(chain)


@contextlib.asynccontextmanager
async def _open(settings: GatewaySettings, metrics: Metrics,
                failure_timer: Callable[[], float] = time.monotonic) -> AsyncIterator[Deps]:
    channel_options = {"retries": settings.rpc_retries, "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms}
    embed = EmbedClient(embed_channel(settings.embed_target, ready_model=settings.default_model,
                                      security=settings.embed_security, **channel_options),
                        timeout_s=settings.embed_timeout_s)
    scraper = ScraperClient(scraper_channel(settings.scraper_target, security=settings.scraper_security,
                                            **channel_options), timeout_s=settings.scraper_timeout_s)
    downloader = Downloader(
        DownloadLimits(
            max_bytes=settings.download_max_bytes, concurrency=settings.download_concurrency,
            per_host=settings.download_per_host, connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s, attempt_timeout_s=settings.download_timeout_s,
            retries=settings.download_retries, backoff_s=settings.retry_backoff_s,
            max_redirects=settings.max_redirects, user_agent=settings.user_agent,
        ),
        parse_allowlist(settings.fetch_allow),
    )
    cache = EmbeddingCache(settings.cache_size, settings.cache_ttl_s, on_lookup=metrics.cache_lookup)
    captions = _captions(settings, embed)
    failures = FailedDownloads(settings.failed_download_entries, settings.failed_download_ttl_s,
                               settings.failed_download_retry_s, timer=failure_timer,
                               on_skip=metrics.failed_download_skipped)
    metrics.watch_failed_downloads(failures.__len__)
    image_limits = ImageLimits(max_pixels=settings.max_pixels, short_side=settings.embed_image_side)
    catalog = ModelCatalog(embed)
    signer = ThumbnailSigner(settings.thumbnail_secret, settings.thumbnail_ttl_s)
    blobs: BlobStore | None = None
    reindex: Reindexer | None = None
    deleter: CollectionDeleter | None = None
    collector: BlobCollector | None = None
    originals: Originals | None = None
    migration: asyncio.Task[None] | None = None
    checker: LinkChecker | None = None
    thumbnails: WebThumbnails | None = None
    try:
        async with open_gallery(settings, metrics, embed, catalog, captions) as opened:
            collections: CollectionDeps | None = None
            probes: tuple[Probe, ...] = ()
            if opened is not None:
                gallery, blobs, originals = opened.source, opened.blobs, opened.originals
                thumbnails = opened.thumbnails
                # Issue 23: each point's compact patch tokens, written with it (gallery/patch_tokens.py).
                patches = PatchWriter(embed, link_store(gallery.link), timeout_s=settings.embed_timeout_s) \
                    if settings.patch_tokens == "on" else None
                reindex = Reindexer(gallery.link, blobs, embed, image_limits, settings.embed_batch,
                                    settings.embed_batch_bytes, settings.reindex_heartbeat_s,
                                    space_for=gallery.space_for, downloader=downloader, placement=opened.placement,
                                    download_timeout_s=settings.download_timeout_s, patches=patches)
                sweep = PointSweep(gallery.link, served_spaces(catalog, gallery.space_for), metrics,
                                   grace_s=settings.blobs_gc_grace_s,
                                   tenants=configured_tenants(settings.api_keys, settings.tenant_key))
                deleter = CollectionDeleter(gallery.link, blobs, gallery.space_for,
                                            release_grace_s=settings.blobs_release_grace_s, forget_jobs=reindex.forget)
                collector = BlobCollector(gallery.link, blobs, metrics, interval_s=settings.blobs_gc_interval_s,
                                          grace_s=settings.blobs_gc_grace_s, sweep=sweep, deleter=deleter,
                                          reservation_ttl_s=settings.quota_reservation_ttl_s,
                                          thumbnails=thumbnails.blobs if thumbnails is not None else None,
                                          spaces=served_spaces(catalog, gallery.space_for))
                collector.start()
                # Link health of web points (collections/link_checker.py); 0 per minute: off.
                checker = LinkChecker(gallery.link, downloader, metrics, served_spaces(catalog, gallery.space_for),
                                      per_minute=settings.link_checks_per_minute,
                                      period_s=settings.link_check_period_s,
                                      recheck_after_s=settings.link_recheck_after_s,
                                      timeout_s=settings.download_timeout_s, thumbnails=thumbnails)
                checker.start()
                moves = planned_moves(settings.api_keys, settings.tenant_key)
                if moves:  # plain keys' collections under their former tenant names (tenant_migration.py)
                    migration = asyncio.create_task(migrate_until_done(
                        gallery.link, served_spaces(catalog, gallery.space_for), moves, settings.gallery_retry_s))
                quota = Quota(Limits(settings.tenant_max_images, settings.tenant_max_bytes,
                                     settings.tenant_max_collections))
                collections = CollectionDeps(
                    settings, catalog, signer, gallery, blobs, reindex, deleter, originals, quota,
                    UploadDeps(settings, quota, downloader, image_limits, embed, gallery.link, gallery.space_for, blobs,
                               placement=opened.placement,
                               patches=patches))
                # Reported by /ready, not required: without it searches still answer from the web
                # (partial), and every replica shares the store, so failing readiness on it would
                # take the whole site down instead of a part of each answer. (The store's own
                # error names its address: logged by the link, not served.)
                probes = (Probe("gallery", gallery.check,
                                "The gallery store does not answer; searches use the web alone."),)
            feedback = open_feedback(settings, opened.source if opened is not None else None, catalog)
            pipeline = SearchPipeline(
                limits=SearchLimits(budget_s=settings.search_budget_s, caption_timeout_s=settings.caption_timeout_s,
                                    max_candidates=settings.max_candidates, attention_top=settings.attention_top),
                embed=embed, scraper=scraper, captions=captions,
                downloads=CandidateDownloads(downloader, image_limits, failures),
                batches=EmbedBatches(embed, cache, BatchLimits(
                    max_images=settings.embed_batch, max_bytes=settings.embed_batch_bytes,
                    straggler_wait_s=settings.embed_batch_wait_ms / 1000, concurrency=settings.embed_concurrency), metrics),
                cache=cache, metrics=metrics, gallery=opened.source if opened is not None else None,
                boost=feedback.boost,
                refine_method=settings.refine_method,
            )
            # query_refs are sealed under the thumbnail secret (another label): every replica opens them.
            marks = feedback_routes.FeedbackDeps(QueryRefs(settings.thumbnail_secret), feedback.marks,
                                                 opened.source if opened is not None else None, feedback.off)
            yield Deps(SearchDeps(settings, pipeline, catalog, signer, image_limits, downloader, embed,
                                  thumbnails.blobs if thumbnails is not None else None),
                       OpsDeps(settings, catalog, embed, scraper, probes), collections, marks)
    finally:
        if migration is not None:
            migration.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await migration
        if checker is not None:
            await checker.close()
        if collector is not None:
            await collector.close()
        if originals is not None:
            await originals.close()
        if deleter is not None:
            await deleter.close()
        if reindex is not None:
            await reindex.close()
        if blobs is not None:
            await blobs.close()
        if thumbnails is not None:
            await thumbnails.blobs.close()
        await captions.close()
        await downloader.close()
        # grpc.aio's grace defaults to None (cancel at once); grpc-stubs 1.53 makes it required.
        await embed.channel.close(None)
        await scraper.channel.close(None)


class _RequestMetrics:
    """Counts and times every request by route template (never by raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths
        # Templated routes (/collections/{name}/images) by their template, not "unmatched".
        self.templates = [(compile_path(p)[0], p) for p in sorted(paths) if "{" in p]

    def _route(self, path: str) -> str:
        if path in self.paths:
            return path
        for pattern, template in self.templates:
            if pattern.match(path):
                return template
        if path.startswith("/thumbnails/"):
            return "/thumbnails/{token}"
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.request(self._route(scope["path"]), scope["method"], status, time.monotonic() - start)


Endpoint = Callable[[Request], Awaitable[Response]]


def _by_method(path: str, name: str, **handlers: Endpoint) -> Route:
    """ONE route for a path that takes several methods, dispatching by method.

    Two Routes for one path each answer a method neither takes with a 405 whose Allow
    lists only the first one's methods (PUT /collections said "GET, HEAD"); one route
    knows them all. HEAD is GET's, as Starlette adds it to every GET route.
    """

    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, dispatch, methods=list(handlers), name=name)


def create_app(settings: GatewaySettings | None = None, *,
               failure_timer: Callable[[], float] = time.monotonic) -> Starlette:
    """Build the app; backends are connected when the lifespan starts.

    ``failure_timer`` is the clock of the failed-download memory (tests move it on).
    """
    settings = settings or GatewaySettings.from_env()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _open(settings, metrics, failure_timer) as deps:
            deps.install(app.state)
            log.info("gateway: embed=%s (%s) scraper=%s (%s)", settings.embed_target,
                     settings.embed_security.describe(), settings.scraper_target, settings.scraper_security.describe())
            yield

    # Every item is a Route or a Mount, both with a path; BaseRoute (web.routes()) has none.
    route_list: list[Any] = [
        Route("/search", routes.search, methods=["POST"]),
        Route("/search/stream", routes.search_stream, methods=["POST"]),
        Route("/analyze-attention", routes.analyze_attention, methods=["POST"]),
        Route("/models", routes.list_models, methods=["GET"]),
        Route("/health", routes.health, methods=["GET"]),
        Route("/ready", routes.ready, methods=["GET"]),
        Route("/metrics", routes.metrics_text, methods=["GET"]),
        Route("/openapi.json", routes.openapi, methods=["GET"]),
        Route("/thumbnails/{token}", routes.thumbnail, methods=["GET"]),
        _by_method("/collections", "collections", GET=collection_routes.list_collections,
                   POST=collection_routes.create_collection),
        Route("/collections/{name}", collection_routes.delete_collection, methods=["DELETE"]),
        _by_method("/collections/{name}/images", "collection_images", GET=collection_routes.list_images,
                   POST=collection_routes.add_images),
        Route("/collections/{name}/hashes", collection_routes.present_hashes, methods=["POST"]),
        # The web collection's colour backfill: POST starts it, GET shows its progress.
        _by_method("/collections/web/reindex", "web_reindex", GET=collection_routes.web_reindex_job,
                   POST=collection_routes.reindex_collection),
        Route("/collections/{name}/reindex", collection_routes.reindex_collection, methods=["POST"]),
        _by_method("/collections/{name}/images/{id}", "collection_image", GET=collection_routes.get_image,
                   DELETE=collection_routes.delete_image),
        _by_method("/feedback", "feedback", GET=feedback_routes.list_marks, POST=feedback_routes.add_mark,
                   DELETE=feedback_routes.delete_all_marks),
        Route("/feedback/{id}", feedback_routes.delete_mark, methods=["DELETE"]),
        *web.routes(),  # the search page at / and its files under /static
    ]
    buckets = TokenBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst) if settings.rate_limit_per_minute else None
    install_log_stamp()
    # Outermost first: every answer gets a request id, metrics see every answer, CORS
    # headers go on errors too.
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(_RequestMetrics, metrics=metrics, paths=frozenset(r.path for r in route_list)),
        Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                   allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"],
                   expose_headers=["X-Request-ID", "Retry-After"], max_age=600),
        Middleware(ApiKeyMiddleware, keys=settings.api_keys, tenant_key=settings.tenant_key),
        Middleware(RateLimitMiddleware, buckets=buckets,
                   identity=ClientIdentity(settings.api_keys, settings.trusted_proxies)),
        Middleware(BodyLimitMiddleware, max_bytes=settings.upload_max_bytes + _FORM_OVERHEAD,
                   collection_max_bytes=settings.collection_max_bytes),
    ]
    app = Starlette(
        routes=route_list,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={Exception: errors.handle, HTTPException: errors.handle, errors.GatewayError: errors.handle},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    return app

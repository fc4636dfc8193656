"""What the routes use, in three small typed sets built once at start by app.py.

``SearchDeps`` for the searches and thumbnails, ``OpsDeps`` for the operational routes
(models, readiness, the description), ``CollectionDeps`` for the private collections:
that one exists only with the gallery on, and ``collection_deps`` is the one place that
answers "the gallery is off" for a route that needs it. Here, not in app.py, so that the
routes and app.py do not import each other: app.py builds them onto ``app.state``, the
routes only read them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import State
from starlette.requests import Request

from search_gateway.clients.backends import EmbedClient, ScraperClient
from search_gateway.clients.models import ModelCatalog
from search_gateway.collections.blobs.base import BlobStore
from search_gateway.collections.deletion import CollectionDeleter
from search_gateway.collections.orphans import Originals
from search_gateway.collections.quota import Quota
from search_gateway.collections.reindex import Reindexer
from search_gateway.collections.uploads import UploadDeps
from search_gateway.config import GatewaySettings
from search_gateway.errors import NotFound
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits
from search_gateway.http.feedback_routes import FeedbackDeps
from search_gateway.http.thumbnails import ThumbnailSigner
from search_gateway.search.gallery_source import GallerySource
from search_gateway.search.pipeline import SearchPipeline

GALLERY_OFF = "Private collections need the gallery, which is off on this gateway (GATEWAY_GALLERY=off)."


@dataclass(frozen=True)
class SearchDeps:
    """POST /search, /search/stream, /analyze-attention and GET /thumbnails/{token}."""

    settings: GatewaySettings
    pipeline: SearchPipeline
    catalog: ModelCatalog
    signer: ThumbnailSigner
    image_limits: ImageLimits
    downloader: Downloader
    embed: EmbedClient
    # The thumbnails kept for web points (None: the gallery or GATEWAY_WEB_THUMBNAILS off).
    thumbnails: BlobStore | None = None


@dataclass(frozen=True)
class Probe:
    """A part /ready reports but does not require (searches do without it)."""

    name: str
    check: Callable[[], Awaitable[bool]]
    degraded: str  # the sentence served when it does not answer


@dataclass(frozen=True)
class OpsDeps:
    """GET /models, /ready, /openapi.json."""

    settings: GatewaySettings
    catalog: ModelCatalog
    embed: EmbedClient
    scraper: ScraperClient
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class CollectionDeps:
    """The private collections' routes; built only with the gallery on."""

    settings: GatewaySettings
    catalog: ModelCatalog
    signer: ThumbnailSigner
    gallery: GallerySource
    blobs: BlobStore
    reindex: Reindexer
    deleter: CollectionDeleter
    originals: Originals
    # A tenant's limits, reserved before the work (images, bytes, collections).
    quota: Quota
    uploads: UploadDeps


def search_deps(request: Request) -> SearchDeps:
    deps: SearchDeps = request.app.state.search
    return deps


def ops_deps(request: Request) -> OpsDeps:
    deps: OpsDeps = request.app.state.ops
    return deps


def collection_deps(request: Request, refusal: NotFound | None = None) -> CollectionDeps:
    """The collections' dependencies; with the gallery off, ``refusal`` (by default the
    404 every collection route answers then)."""
    deps: CollectionDeps | None = request.app.state.collections
    if deps is None:
        raise refusal or NotFound(GALLERY_OFF)
    return deps


@dataclass(frozen=True)
class Deps:
    """All three, as the lifespan hands them to the app (``install``)."""

    search: SearchDeps
    ops: OpsDeps
    collections: CollectionDeps | None  # None: the gallery is off
    # The query_ref sealer and the marks (http/feedback_routes.py); None only where a test builds Deps without.
    feedback: FeedbackDeps | None = None

    def install(self, state: State) -> None:
        state.search, state.ops, state.collections = self.search, self.ops, self.collections
        state.feedback = self.feedback

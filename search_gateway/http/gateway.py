"""``Gateway``: everything the routes use, built once by the lifespan (app.py).

Here, not in app.py, so that the routes and app.py do not import each other: app.py
builds it and mounts the routes, the routes only read it (``request.app.state.gateway``).
"""

from __future__ import annotations

from dataclasses import dataclass

from search_gateway.clients.backends import EmbedClient, ScraperClient
from search_gateway.clients.models import ModelCatalog
from search_gateway.collections.blobs.base import BlobStore
from search_gateway.collections.deletion import CollectionDeleter
from search_gateway.collections.quota import Quota
from search_gateway.collections.reindex import Reindexer
from search_gateway.config import GatewaySettings
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.images import ImageLimits
from search_gateway.http.thumbnails import ThumbnailSigner
from search_gateway.metrics import Metrics
from search_gateway.search.caption import CaptionChain
from search_gateway.search.gallery_source import GallerySource
from search_gateway.search.pipeline import SearchPipeline


@dataclass
class Gateway:
    """Everything the routes use, built once by the lifespan."""

    settings: GatewaySettings
    metrics: Metrics
    embed: EmbedClient
    scraper: ScraperClient
    downloader: Downloader
    catalog: ModelCatalog
    pipeline: SearchPipeline
    signer: ThumbnailSigner
    captions: CaptionChain
    image_limits: ImageLimits
    # A tenant's limits, reserved before the work (images, bytes, collections).
    quota: Quota
    gallery: GallerySource | None = None
    # Uploaded originals of private collections; None when the gallery is off.
    blobs: BlobStore | None = None
    # Background re-embedding of collections (POST /collections/{name}/reindex); with the blobs.
    reindex: Reindexer | None = None
    # Hides a deleted collection at once and empties it in the background; with the blobs.
    deleter: CollectionDeleter | None = None

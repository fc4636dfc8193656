"""The gallery as the gateway runs it: the store the settings name, opened at start
(a corrupt or incompatible store stops the gateway with the store's message), the
background writer with machine tagging, and an orderly close.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from search_gateway.clients.backends import EmbedClient
from search_gateway.clients.models import ModelCatalog
from search_gateway.collections.blobs.base import BlobStore
from search_gateway.collections.blobs.factory import open_blob_store
from search_gateway.collections.orphans import Originals
from search_gateway.collections.point_sweep import served_spaces
from search_gateway.collections.records import live_names
from search_gateway.collections.web_thumbnails import WebThumbnails
from search_gateway.config import GatewaySettings
from search_gateway.feedback.marks import MarkStore
from search_gateway.gallery.base import GalleryCorrupt, GalleryStore
from search_gateway.gallery.factory import open_store
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import PatchWriter, link_store
from search_gateway.gallery.writer import GalleryWriter
from search_gateway.gallery.writer import Tagger as PointTagger
from search_gateway.metrics import Metrics
from search_gateway.search.caption import CaptionChain, Vocabulary, ZeroShotCaptioner
from search_gateway.search.feedback_boost import BoostLimits, FeedbackBoost
from search_gateway.search.gallery_source import GallerySource, model_space
from search_gateway.search.tagging import Tagger
from service_common.model_registry import text_models

log = logging.getLogger(__name__)

# Time given to the writer at shutdown to store what searches handed it.
_CLOSE_GRACE_S = 5.0


class GalleryStartError(RuntimeError):
    """The gallery store cannot be read: the gateway must not start (the message says why and what to do)."""


@dataclass(frozen=True)
class OpenGallery:
    """The gallery and what the private collections keep beside it, built in order."""

    source: GallerySource
    blobs: BlobStore  # uploaded originals; closed by the caller (app.py), after what uses it
    originals: Originals  # likewise
    # Body placement tags for points written outside the writer (uploads, reindex).
    placement: PointTagger
    # Web points' kept thumbnails (GATEWAY_WEB_THUMBNAILS=off: None); its store closed by app.py too.
    thumbnails: WebThumbnails | None = None


@contextlib.asynccontextmanager
async def open_gallery(settings: GatewaySettings, metrics: Metrics, embed: EmbedClient, catalog: ModelCatalog,
                       captions: CaptionChain) -> AsyncIterator[OpenGallery | None]:
    if settings.gallery == "off":
        yield None
        return
    url = settings.gallery_url or None
    key = settings.gallery_api_key.get_secret_value() if settings.gallery_api_key else None

    async def opener() -> GalleryStore:
        return await open_store(path=None if url else settings.gallery_path, url=url, api_key=key,
                                hnsw_ef=settings.gallery_hnsw_ef, exact=settings.gallery_exact)

    where = url or str(settings.gallery_path.absolute())
    link = GalleryLink(opener, where, retry_s=settings.gallery_retry_s)
    try:
        await link.start()
    except GalleryCorrupt as exc:
        raise GalleryStartError(f"The gateway cannot start: {exc} (GATEWAY_GALLERY_PATH / GATEWAY_GALLERY_URL; "
                                "GATEWAY_GALLERY=off runs without the gallery.)") from exc
    # The offline captioner's prompt vectors are the tagger's for the same model.
    shared = {c.vocabulary.model: c.vocabulary for _, c in captions.captioners if isinstance(c, ZeroShotCaptioner)}
    vocabularies: dict[str, Vocabulary] = dict(shared)
    tagger = Tagger(embed, text_models(), timeout_s=settings.embed_timeout_s, shared=vocabularies)
    # Issue 23: each web point's compact patch tokens, computed by the writer (gallery/patch_tokens.py).
    patcher = PatchWriter(embed, link_store(link), timeout_s=settings.embed_timeout_s) \
        if settings.patch_tokens == "on" else None
    writer = GalleryWriter(link, metrics, max_pending=settings.gallery_write_queue, retry_s=settings.gallery_retry_s,
                           tagger=tagger, patcher=patcher)
    writer.start()
    try:
        blobs = await open_blob_store(
            path=None if settings.blobs_url else settings.blobs_path, url=settings.blobs_url or None,
            bucket=settings.blobs_bucket, region=settings.blobs_region, prefix=settings.blobs_prefix,
            connect_timeout_s=settings.blobs_connect_timeout_s, read_timeout_s=settings.blobs_read_timeout_s,
            attempts=settings.blobs_attempts)
        # Private results whose original is missing are hidden from searches (and removed).
        originals = Originals(blobs, link, functools.partial(model_space, catalog))
        try:
            thumbnails = await open_thumbnails(settings, link, metrics)
        except BaseException:
            await blobs.close()
            raise
        writer.thumbnailer = thumbnails
        yield OpenGallery(GallerySource(link, writer, catalog, metrics, live_names, originals), blobs, originals,
                          tagger.placement, thumbnails)
    finally:
        await writer.close(_CLOSE_GRACE_S)
        await link.close()


async def open_thumbnails(settings: GatewaySettings, link: GalleryLink, metrics: Metrics) -> WebThumbnails | None:
    """The web thumbnails' store: the blobs' bucket under its own prefix when the blobs are in
    one, else a folder of its own (var/thumbnails); never the originals' namespace."""
    if settings.web_thumbnails == "off":
        return None
    store = await open_blob_store(
        path=None if settings.blobs_url else settings.thumbnails_path, url=settings.blobs_url or None,
        bucket=settings.blobs_bucket, region=settings.blobs_region, prefix=settings.thumbnails_prefix,
        connect_timeout_s=settings.blobs_connect_timeout_s, read_timeout_s=settings.blobs_read_timeout_s,
        attempts=settings.blobs_attempts)
    return WebThumbnails(store, link, metrics, max_pixels=settings.max_pixels)


FEEDBACK_OFF = "Feedback marks are off on this gateway (GATEWAY_FEEDBACK=off); nothing is stored."
FEEDBACK_NO_GALLERY = "Feedback marks are kept in the gallery, which is off on this gateway (GATEWAY_GALLERY=off)."


@dataclass(frozen=True)
class Feedback:
    """The stored marks and the boost they give searches; both None when feedback is off
    (``off`` then says why, for the routes' 404)."""

    marks: MarkStore | None
    boost: FeedbackBoost | None
    off: str = ""


def open_feedback(settings: GatewaySettings, source: GallerySource | None, catalog: ModelCatalog) -> Feedback:
    if settings.feedback == "off":
        return Feedback(None, None, FEEDBACK_OFF)
    if source is None:
        return Feedback(None, None, FEEDBACK_NO_GALLERY)
    # The spaces of the models served now: marks of other weights are neither listed nor used.
    marks = MarkStore(source.link, served_spaces(catalog, source.space_for), settings.feedback_max_marks)
    limits = BoostLimits(weight=settings.feedback_boost_weight, threshold=settings.feedback_boost_similarity,
                         max_marks=settings.feedback_boost_marks)
    return Feedback(marks, FeedbackBoost(marks, limits))

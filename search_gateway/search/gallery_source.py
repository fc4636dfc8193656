"""The gallery as a source of results: asked first with the query's vector, asked
again for each web candidate ("already known?") before it is downloaded, and handed
every newly embedded web image to remember (in the background).

Vectors are kept per vector space (model, weights fingerprint, dimension), taken
from the embed server's own provenance, so random-weight vectors never meet
pretrained ones. The point id of every result is the one it has (or will have) in
the gallery's ``web`` collection, so "more like this" can name it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import MappingProxyType
from typing import TypeVar

import numpy as np

from search_gateway.gallery.base import GalleryError, GalleryHit, GalleryPoint, VectorSpace, point_id
from search_gateway.gallery.gallery import Gallery
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.writer import GalleryWriter, Sightings
from search_gateway.metrics import Metrics
from search_gateway.models import ModelCatalog
from search_gateway.replies import Provenance
from search_gateway.search.types import Candidate, EmbeddedImage, RankedResult

WEB = "web"
T = TypeVar("T")


def result_id(sha256: str) -> str:
    return point_id(WEB, sha256)


def space_of(model: str, provenance: Provenance | None, dimension: int) -> VectorSpace | None:
    """Where vectors from this reply live; None when the embed server did not say which weights."""
    if provenance is None or not provenance.weights_fingerprint:
        return None
    return VectorSpace(model, provenance.weights_fingerprint, dimension)


def ranked(hit: GalleryHit, source: str = "gallery") -> RankedResult:
    p = hit.point
    # The most recent sighting first: older URLs are the likeliest to be dead.
    candidate = Candidate(url=p.urls[-1] if p.urls else "", source_url=p.source_pages[-1] if p.source_pages else "",
                          platform=p.platform, title=p.title, engine=p.engine)
    return RankedResult(candidate, p.content_hash, hit.score, source=source, tags=MappingProxyType(dict(p.tags)))


def sighting(image: EmbeddedImage) -> GalleryPoint:
    c = image.candidate
    width, height = image.size if image.size else (None, None)
    return GalleryPoint(content_hash=image.sha256, vector=tuple(np.asarray(image.vector, dtype=np.float32).tolist()),
                        collection=WEB, urls=(c.url,), source_pages=(c.source_url,) if c.source_url else (),
                        platform=c.platform, title=c.title, engine=c.engine, width=width, height=height)


class GallerySource:
    """Shared by all searches of one gateway."""

    def __init__(self, link: GalleryLink, writer: GalleryWriter, catalog: ModelCatalog, metrics: Metrics) -> None:
        self.link = link
        self.writer = writer
        self._catalog = catalog
        self._metrics = metrics

    async def find(self, space: VectorSpace, vector: np.ndarray, *, limit: int, tags: Sequence[str] = (),
                   min_score: float | None = None) -> list[RankedResult]:
        """The best remembered images; raises GalleryUnavailable (the search goes on without them)."""
        hits = await self._ask(lambda g: g.find(space, vector, limit=limit, collections=(WEB,), tags=tags,
                                                min_score=min_score))
        return [ranked(hit) for hit in hits]

    async def known_url(self, space: VectorSpace, vector: np.ndarray, url: str) -> RankedResult | None:
        """The remembered image last seen at ``url``, scored against the query, or None."""
        hits = await self._ask(lambda g: g.find(space, vector, limit=1, collections=(WEB,), urls=(url,)))
        return ranked(hits[0], source=WEB) if hits else None

    async def like(self, model: str, id: str) -> tuple[VectorSpace, GalleryPoint] | None:
        """The stored point ``id`` in the model's current space (ListModels' fingerprint)."""
        space = await self.space_for(model)
        if space is None:
            return None
        point = await self._ask(lambda g: g.by_id(space, id))
        return (space, point) if point is not None and point.vector is not None else None

    async def space_for(self, model: str) -> VectorSpace | None:
        for m in await self._catalog.models():
            if m.name == model and m.weights_fingerprint and m.global_dim > 0:
                return VectorSpace(model, m.weights_fingerprint, m.global_dim)
        return None

    async def check(self) -> bool:
        """For /ready: the store opens and answers a count now."""
        try:
            gallery = await self.link.gallery()
            await gallery.count(VectorSpace("probe", "probe", 1))
        except GalleryError as exc:
            self.link.failed(exc)
            return False
        self.link.answered()
        return True

    def remember(self, space: VectorSpace, images: Sequence[EmbeddedImage]) -> None:
        """Hand newly embedded web images to the background writer; never waits."""
        self.writer.submit(Sightings(space, tuple(sighting(i) for i in images)))

    async def _ask(self, call: Callable[[Gallery], Awaitable[T]]) -> T:
        try:
            gallery = await self.link.gallery()
            answer = await call(gallery)
        except GalleryError as exc:
            self.link.failed(exc)
            self._metrics.gallery_lookups.labels("unavailable").inc()
            raise
        self.link.answered()
        self._metrics.gallery_lookups.labels("ok").inc()
        return answer

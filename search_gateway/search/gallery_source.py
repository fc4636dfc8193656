"""The gallery as a source of results: asked first with the query's vector, asked
again for each web candidate ("already known?") before it is downloaded, and handed
every newly embedded web image to remember (in the background).

Vectors are kept per vector space (model, weights fingerprint, dimension), taken
from the embed server's own provenance, so random-weight vectors never meet
pretrained ones. The point id of every result is the one it has (or will have) in
the gallery's ``web`` collection, so "more like this" can name it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol, TypeVar

import numpy as np

from search_gateway.clients.models import ModelCatalog
from search_gateway.clients.replies import Candidate
from search_gateway.gallery.base import (
    LIVE,
    ExampleQuery,
    GalleryError,
    GalleryHit,
    GalleryPoint,
    GalleryStore,
    VectorSpace,
)
from search_gateway.gallery.gallery import Gallery
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.patch_tokens import TokenStore
from search_gateway.gallery.spaces import WEB
from search_gateway.gallery.writer import GalleryWriter, Sightings
from search_gateway.metrics import Metrics
from search_gateway.search.types import EmbeddedImage, RankedResult

T = TypeVar("T")


# What the search needs of the private collections, defined here and implemented in
# collections/ (wiring.py and app.py pass it in), so that search/ never imports collections/.
class TenantCollections(Protocol):
    """The names of a tenant's live collections (collections/records.py ``live_names``):
    what "search all my collections" searches."""

    def __call__(self, store: GalleryStore, tenant: str, /) -> Awaitable[Sequence[str]]: ...


class MissingOriginals(Protocol):
    """Which private images have lost their original, and their removal in the background
    (collections/orphans.py ``Originals``)."""

    async def missing(self, hashes: Iterable[str]) -> set[str]: ...

    def remove_later(self, tenant: str, hashes: Iterable[str],
                     seen: Sequence[tuple[str, VectorSpace, str]] = ()) -> None: ...


def ranked(hit: GalleryHit, source: str = "gallery") -> RankedResult:
    p = hit.point
    # The most recent sighting first: older URLs are the likeliest to be dead.
    candidate = Candidate(url=p.urls[-1] if p.urls else "", source_url=p.source_pages[-1] if p.source_pages else "",
                          platform=p.platform, title=p.title, engine=p.engine)
    return RankedResult(candidate, p.content_hash, hit.score, source=source, tags=MappingProxyType(dict(p.tags)),
                        collection=p.collection, tenant=p.tenant, point_id=p.id, color_scheme=p.color_scheme,
                        palette=p.palette or (), palette_shares=p.palette_shares or (),
                        placement=MappingProxyType(dict(p.placement)),
                        # Web points only: a private result's thumbnail is its own original.
                        stale=p.stale, thumbnail=p.thumbnail if p.tenant is None else None)


def visible_to(point: GalleryPoint, tenant: str) -> bool:
    """A public web point, or one of the caller's own: anything else does not exist for them.

    Checked on every point a search hands out, even those the store's filter already
    restricted, so a filter built wrong can never show another tenant's image. A
    bookkeeping record (a feedback mark, a collection's record) is never an image, whoever's.
    """
    if point.record or point.collection.startswith("@"):
        return False
    if point.tenant is None:
        return point.collection == WEB
    return point.tenant == tenant


def sighting(image: EmbeddedImage) -> GalleryPoint:
    c = image.candidate
    width, height = image.size if image.size else (None, None)
    # The colour facts read when it was downloaded (none when its vector came from the cache:
    # the gallery's merge then keeps what it had).
    facts = image.colour
    downloaded = image.embed_bytes is not None
    return GalleryPoint(content_hash=image.sha256, vector=tuple(np.asarray(image.vector, dtype=np.float32).tolist()),
                        collection=WEB, urls=(c.url,), source_pages=(c.source_url,) if c.source_url else (),
                        platform=c.platform, title=c.title, engine=c.engine, width=width, height=height,
                        color_scheme=facts.scheme if facts else None, palette=facts.palette if facts else None,
                        palette_shares=facts.shares if facts else None,
                        # Downloaded by this search: its link is live now (seen again, a stale point is refreshed).
                        link_checked=datetime.now(UTC) if downloaded else None, link_state=LIVE if downloaded else None)


async def model_space(catalog: ModelCatalog, model: str) -> VectorSpace | None:
    """The vector space of ``model``'s current weights; None while it has none."""
    for m in await catalog.models():
        if m.name == model and m.weights_fingerprint and m.global_dim > 0:
            return VectorSpace(model, m.weights_fingerprint, m.global_dim)
    return None


class GallerySource:
    """Shared by all searches of one gateway."""

    def __init__(self, link: GalleryLink, writer: GalleryWriter, catalog: ModelCatalog, metrics: Metrics,
                 live_collections: TenantCollections, originals: MissingOriginals | None = None) -> None:
        self.link = link
        self.writer = writer
        self._catalog = catalog
        self._metrics = metrics
        self._live_collections = live_collections
        # With the blob store: private results whose original is missing are hidden.
        self.originals = originals

    async def find(self, space: VectorSpace, vector: np.ndarray, *, tenant: str, limit: int,
                   collections: Sequence[str] | None = None, tags: Sequence[str] = (),
                   min_score: float | None = None, examples: ExampleQuery | None = None,
                   color: str | None = None, placement: Sequence[str] = ()) -> list[RankedResult]:
        """The best remembered images of ``collections`` (None: web and all of the
        tenant's); raises GalleryUnavailable (the search goes on without them). With
        ``examples``: scored by that query by examples (search/refine.py)."""
        if not tenant:
            raise ValueError("a gallery search needs the caller's tenant")
        if collections is None:
            # "All of the tenant's" means its live collections, by name: never the points
            # of one being deleted, nor any an interrupted write left without a collection.
            private = tuple(await self._ask(lambda g: self._live_collections(g.store, tenant)))
        else:
            private = tuple(c for c in collections if c != WEB)
        # Two store queries, never one filter for both: web points have no tenant, and a
        # private query without its tenant filter would match every tenant's points.
        asks: list[Callable[[Gallery], Awaitable[list[GalleryHit]]]] = []
        if collections is None or WEB in collections:
            asks.append(lambda g: g.find(space, vector, limit=limit, collections=(WEB,), tags=tags,
                                         min_score=min_score, examples=examples, color_scheme=color,
                                         placement=placement))
        if private:
            asks.append(lambda g: g.find(space, vector, limit=limit, collections=private, tenant=tenant,
                                         tags=tags, min_score=min_score, examples=examples, color_scheme=color,
                                         placement=placement))

        async def both(g: Gallery) -> list[GalleryHit]:
            answers = await asyncio.gather(*(ask(g) for ask in asks))
            return [hit for hits in answers for hit in hits]

        hits = await self._with_originals(space, tenant, [h for h in await self._ask(both) if visible_to(h.point, tenant)])
        # Best first; of equal scores (the same picture in web and a private collection)
        # the caller's own copy first, so that it is the one the ranking keeps.
        hits.sort(key=lambda h: (-h.score, h.point.tenant is None))
        return [ranked(hit) for hit in hits[:limit]]

    async def _with_originals(self, space: VectorSpace, tenant: str, hits: list[GalleryHit]) -> list[GalleryHit]:
        """Drop private hits whose original is gone (an orphan: no thumbnail, nothing to
        reindex from) and have them removed; a stat or HEAD per private hit, concurrently."""
        private = [h.point for h in hits if h.point.tenant is not None]
        if self.originals is None or not private:
            return hits
        missing = await self.originals.missing(p.content_hash for p in private)
        if not missing:
            return hits
        self.originals.remove_later(tenant, missing, [(p.content_hash, space, p.id) for p in private
                                                      if p.content_hash in missing])
        return [h for h in hits if h.point.tenant is None or h.point.content_hash not in missing]

    async def known_url(self, space: VectorSpace, vector: np.ndarray, url: str) -> RankedResult | None:
        """The remembered image last seen at ``url``, scored against the query, or None."""
        hits = await self._ask(lambda g: g.find(space, vector, limit=1, collections=(WEB,), urls=(url,)))
        # A stale point is not "known": the search downloads the URL again, and a download
        # of the same picture refreshes the point (live, checked now) through the writer.
        return ranked(hits[0], source=WEB) if hits and not hits[0].point.stale else None

    async def like(self, model: str, id: str, tenant: str) -> tuple[VectorSpace, GalleryPoint] | None:
        """The stored point ``id`` in the model's current space (ListModels' fingerprint),
        when the caller may see it; another tenant's point is None, like an unknown id."""
        space = await self.space_for(model)
        if space is None:
            return None
        point = await self._ask(lambda g: g.by_id(space, id))
        if point is None or point.vector is None or not visible_to(point, tenant):
            return None
        return space, point

    async def marked(self, model: str, ids: Sequence[str],
                     tenant: str) -> tuple[VectorSpace | None, dict[str, GalleryPoint]]:
        """The stored points ``ids`` (with vectors) in the model's current space that the
        caller may see, by id, in one store call; the caller refuses a missing one (404)."""
        space = await self.space_for(model)
        if space is None or not ids:
            return space, {}
        found = await self._ask(lambda g: g.store.retrieve(space, list(ids)))
        return space, {p.id: p for p in found if p.vector is not None and visible_to(p, tenant)}

    async def space_for(self, model: str) -> VectorSpace | None:
        return await model_space(self._catalog, model)

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
        # The bytes go along for the points' patch tokens (issue 23), computed by the writer.
        self.writer.submit(Sightings(space, tuple(sighting(i) for i in images),
                                     {i.sha256: i.embed_bytes for i in images if i.embed_bytes is not None}))

    async def stored_tokens(self, space: VectorSpace, results: Sequence[RankedResult],
                            tenant: str) -> dict[str, np.ndarray]:
        """The stored patch tokens of these results by point id (gallery/patch_tokens.py), only of
        points the caller may see; {} when the gallery cannot answer (they keep their global score)."""
        points = [GalleryPoint(content_hash=r.sha256, vector=None, collection=r.collection, tenant=r.tenant)
                  for r in results]
        points = [p for p in points if visible_to(p, tenant)]
        try:
            return await self._ask(lambda g: TokenStore(g.store).get(space, points))
        except GalleryError:
            return {}

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

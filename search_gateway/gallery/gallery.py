"""The gallery's operations over a :class:`GalleryStore`: remember, find, forget, count, get.

The store only upserts whole points; merging what is already known about a picture
(the URLs and pages it was seen on, first and last seen) with a new sighting
happens here, so both engines merge the same way.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from search_gateway.gallery.base import (
    ExampleQuery,
    GalleryFilter,
    GalleryHit,
    GalleryPoint,
    GalleryStore,
    VectorSpace,
    point_id,
)

# A picture reposted everywhere must not grow its point without bound; the most
# recent sightings are kept (older URLs are the likeliest to be dead).
MAX_URLS = 32
MAX_LIMIT = 1000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _merge_recent(old: Sequence[str], new: Iterable[str]) -> tuple[str, ...]:
    # Known ones keep their order, new ones are appended, and one seen again moves to
    # the end (most recent), so the cap drops the longest-unseen first.
    fresh = list(dict.fromkeys(new))
    again = set(fresh)
    merged = [u for u in old if u not in again] + fresh
    return tuple(merged[-MAX_URLS:])


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(x for x in (a, b) if x is not None) if (a or b) else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x is not None) if (a or b) else None


def merge(known: GalleryPoint, seen: GalleryPoint) -> GalleryPoint:
    """What the gallery knows after seeing ``seen`` again (same collection and hash)."""
    return replace(
        seen,
        urls=_merge_recent(known.urls, seen.urls),
        source_pages=_merge_recent(known.source_pages, seen.source_pages),
        # The first sighting names the picture; later ones only fill gaps.
        platform=known.platform or seen.platform,
        title=known.title or seen.title,
        engine=known.engine or seen.engine,
        first_seen=_earliest(known.first_seen, seen.first_seen),
        last_seen=_latest(known.last_seen, seen.last_seen),
        width=seen.width if seen.width is not None else known.width,
        height=seen.height if seen.height is not None else known.height,
        tags=dict(seen.tags) if seen.tags else dict(known.tags),
        vector=seen.vector if seen.vector is not None else known.vector,
        # A sighting whose pixels were not read (answered from the cache) keeps what was read before.
        **_colour_of(seen if seen.color_scheme is not None or seen.color_error is not None else known),
        placement=dict(seen.placement) if seen.placement else dict(known.placement),
        # One thumbnail per picture: the one kept first stays (the same bytes make the same one).
        thumbnail=known.thumbnail or seen.thumbnail,
        # The latest check of the link wins: a fresh download (live) or the checker's verdict.
        **_link_of(seen if _later(seen.link_checked, known.link_checked) else known),
    )


def _later(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and (b is None or a >= b)


def _link_of(point: GalleryPoint) -> dict[str, Any]:
    return {"link_checked": point.link_checked, "link_state": point.link_state, "link_reason": point.link_reason,
            "link_failures": point.link_failures}


def _colour_of(point: GalleryPoint) -> dict[str, Any]:
    return {"color_scheme": point.color_scheme, "palette": point.palette, "palette_shares": point.palette_shares,
            "color_error": point.color_error}


def _unit_vector(vector: Sequence[float] | np.ndarray, space: VectorSpace) -> tuple[float, ...]:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape[0] != space.dimension:
        raise ValueError(f"expected a {space.dimension}-d vector for {space.model}, got {array.shape[0]} values")
    if not np.all(np.isfinite(array)):
        raise ValueError("the vector has values that are not finite numbers")
    norm = float(np.linalg.norm(array))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("the vector is all zeros: it has no direction to compare by cosine")
    return tuple((array / norm).tolist())


class Gallery:
    """Every image the product has embedded, per vector space, searchable at once."""

    def __init__(self, store: GalleryStore, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self._clock = clock
        # remember() reads, merges and writes: two overlapping remembers of one picture
        # must not drop each other's URLs. One writer per process is enough while the
        # gateway owns the store (several gateway replicas on one server can still race).
        self._write_lock = asyncio.Lock()

    async def remember(self, space: VectorSpace, sightings: Sequence[GalleryPoint]) -> list[GalleryPoint]:
        """Upsert sightings, merged with what is stored for the same (collection, hash)."""
        now = self._clock()
        incoming: dict[str, GalleryPoint] = {}
        for seen in sightings:
            if not seen.content_hash:
                raise ValueError("a gallery point needs the image's content hash")
            if seen.vector is None:
                raise ValueError(f"point {seen.content_hash!r} has no vector")
            seen = replace(
                seen,
                vector=_unit_vector(seen.vector, space),
                first_seen=seen.first_seen or now,
                last_seen=seen.last_seen or now,
            )
            earlier = incoming.get(seen.id)
            incoming[seen.id] = merge(earlier, seen) if earlier else seen
        if not incoming:
            return []
        async with self._write_lock:
            known = {p.id: p for p in await self.store.retrieve(space, list(incoming))}
            merged = [merge(known[i], p) if i in known else p for i, p in incoming.items()]
            await self.store.upsert(space, merged)
        return merged

    async def find(
        self,
        space: VectorSpace,
        vector: Sequence[float] | np.ndarray,
        *,
        limit: int = 50,
        collections: Sequence[str] = ("web",),
        tags: Sequence[str] = (),
        min_score: float | None = None,
        tenant: str | None = None,
        urls: Sequence[str] = (),
        content_hashes: Sequence[str] = (),
        examples: ExampleQuery | None = None,
        color_scheme: str | None = None,
        placement: Sequence[str] = (),
    ) -> list[GalleryHit]:
        """The most similar remembered images, best first (restricted to ``urls`` or
        ``content_hashes`` when given: "is this one known, and how close is it?").
        With ``examples``, scored by that query by examples instead of ``vector``'s cosine
        (``min_score`` then does not apply: the scores are the method's own)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise ValueError(f"min_score is a cosine similarity between -1 and 1, got {min_score}")
        spec = GalleryFilter(collections=tuple(collections), tenant=tenant, tags=tuple(tags),
                             content_hashes=tuple(content_hashes), urls=tuple(urls), color_scheme=color_scheme,
                             placement=tuple(placement))
        if examples is not None:
            return await self.store.search_by_examples(space, examples, limit=limit, filter=spec)
        return await self.store.search(
            space, _unit_vector(vector, space), limit=limit, filter=spec, min_score=min_score
        )

    async def forget(self, space: VectorSpace, content_hashes: Sequence[str], collection: str = "web") -> None:
        await self.store.delete(space, [point_id(collection, h) for h in content_hashes])

    async def count(
        self,
        space: VectorSpace,
        *,
        collections: Sequence[str] = (),
        tenant: str | None = None,
        tags: Sequence[str] = (),
    ) -> int:
        return await self.store.count(space, GalleryFilter(tuple(collections), tenant, tuple(tags)))

    async def get(self, space: VectorSpace, content_hash: str, collection: str = "web") -> GalleryPoint | None:
        return await self.by_id(space, point_id(collection, content_hash))

    async def by_id(self, space: VectorSpace, id: str) -> GalleryPoint | None:
        """The point with this id (and its vector), or None; ``id`` must be a UUID."""
        found = await self.store.retrieve(space, [id])
        return found[0] if found else None

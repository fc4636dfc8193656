"""The gallery's narrow store interface: vector spaces, points, hits, filters, errors.

Two engines implement :class:`GalleryStore` (``edge.py`` in-process, ``qdrant.py``
for a Qdrant server or cluster); everything above them (``gallery.py``, later the
search pipeline) sees only what is defined here, so the engines stay swappable and
the contract tests in ``tests/search_gateway/gallery/contract.py`` hold for both.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

# The named vector inside each space. Named (not the default unnamed vector) so that
# a later per-patch multivector can sit next to it in the same points.
IMAGE_VECTOR = "image"

# A web point's link health (GalleryPoint.link_state): its URL answered with the same picture
# at the last check, or it is gone (404/410), serves another picture, or failed too often.
LIVE, STALE = "live", "stale"
LINK_STATES = (LIVE, STALE)

# Fixed forever: changing it would re-key every stored point.
_POINT_NAMESPACE = uuid.UUID("6f1d2a0c-3b7e-5c61-9d5e-7a2f0e4b9c11")


class GalleryError(Exception):
    """Base of the gallery's errors; the message is a sentence for the operator."""


class GalleryUnavailable(GalleryError):
    """The store cannot answer now (server down, re-indexing, shard held elsewhere): retry later."""


class GalleryCorrupt(GalleryError):
    """Stored data cannot be read (damaged, or written by an incompatible version).

    Raised when the store is opened: the service must refuse to start rather than
    wipe or overwrite what is there. The message names the path and what to do.
    """


@dataclass(frozen=True)
class VectorSpace:
    """Where vectors of one model with one set of weights live, never mixed with others.

    Switching weights (or dimension) gives a different space, hence a fresh index,
    and leaves the old one untouched.
    """

    model: str
    weights_fingerprint: str
    dimension: int

    def __post_init__(self) -> None:
        if not self.model or not self.weights_fingerprint:
            raise ValueError("a vector space needs a model name and a weights fingerprint")
        if not 1 <= self.dimension <= 65_536:
            raise ValueError(f"vector dimension must be between 1 and 65536, got {self.dimension}")

    @property
    def name(self) -> str:
        """A readable, collision-proof name safe as a Qdrant collection and a directory.

        Only ``[a-z0-9-]``; the hash suffix keeps two inputs that slug alike apart
        (``dinov2.reg`` and ``dinov2-reg``).
        """
        digest = hashlib.sha256(
            f"{self.model}\0{self.weights_fingerprint}\0{self.dimension}".encode()
        ).hexdigest()[:10]
        return f"{_slug(self.model, 24)}-{_slug(self.weights_fingerprint, 24)}-d{self.dimension}-{digest}"


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def point_id(collection: str, content_hash: str, tenant: str | None = None) -> str:
    """The point's id: the same picture in the same collection is always the same point.

    A private collection's tenant is part of it, so two tenants' collections of the same
    name never share (or overwrite) a point; public points keep their original ids.
    """
    key = f"{collection}\0{content_hash}" if tenant is None else f"{tenant}\0{collection}\0{content_hash}"
    return str(uuid.uuid5(_POINT_NAMESPACE, key))


@dataclass(frozen=True)
class GalleryPoint:
    """One image as the gallery keeps it; its identity is (collection, content hash)."""

    content_hash: str
    # Unit-normalised by the engines (cosine); None on search hits, which skip it.
    vector: tuple[float, ...] | None
    collection: str = "web"
    # None for the public collections; set on later private per-tenant collections.
    tenant: str | None = None
    urls: tuple[str, ...] = ()
    source_pages: tuple[str, ...] = ()
    platform: str = ""
    title: str = ""
    engine: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    width: int | None = None
    height: int | None = None
    # Machine style/subject tags and their scores.
    tags: Mapping[str, float] = field(default_factory=dict)
    # Size of the original, for a tenant's byte quota (private images and quota entries only).
    bytes: int | None = None
    # An opaque token that every write of a bookkeeping record renews, so a conditional write
    # (GalleryStore.insert, GalleryStore.replace_if) can tell whose write is stored.
    revision: str = ""
    # A bookkeeping record's own fields (collections/records.py: a collection, a reindex job, a
    # quota entry), JSON values under names that say what they hold. Non-empty: the point is a
    # record, not an image, and is stored in the record layout (schema.to_payload), with none
    # of the image fields above but its identity, tenant, bytes and revision.
    record: Mapping[str, Any] = field(default_factory=dict)
    # Colour facts read from the pixels when the point was written (fetch/colour.py):
    # "black_and_grey" or "colour", and the dominant palette ("#rrggbb", dominant first)
    # with each colour's share. None: a point written before they existed (the reindex
    # fills them in), or whose pixels could not be read (``color_error`` says why).
    color_scheme: str | None = None
    palette: tuple[str, ...] | None = None
    palette_shares: tuple[float, ...] | None = None
    color_error: str | None = None
    # Body placement machine tags and their scores (text-tower models only; search/tagging.py).
    placement: Mapping[str, float] = field(default_factory=dict)
    # --- results that never rot (web points; issue 23 part 2)
    # The SHA-256 of the point's kept thumbnail (a 256 px WebP in the thumbnail blob store,
    # collections/web_thumbnails.py); None: none kept (written before them, or not made).
    thumbnail: str | None = None
    # The last check of the point's link (its latest URL): when, its state (LINK_STATES) and
    # why it is stale ("gone", "changed", "unreachable"), and the failures in a row so far.
    # None: never checked (written before link health existed).
    link_checked: datetime | None = None
    link_state: str | None = None
    link_reason: str | None = None
    link_failures: int = 0

    @property
    def stale(self) -> bool:
        return self.link_state == STALE

    @property
    def id(self) -> str:
        return point_id(self.collection, self.content_hash, self.tenant)


@dataclass(frozen=True)
class GalleryHit:
    point: GalleryPoint
    score: float


@dataclass(frozen=True)
class GalleryFilter:
    """What a search or count is restricted to; empty fields do not restrict.

    ``tags`` must ALL be present on a point; ``collections``, ``content_hashes``,
    ``urls`` and ``placement`` match ANY of the values given.
    """

    collections: tuple[str, ...] = ()
    tenant: str | None = None
    tags: tuple[str, ...] = ()
    content_hashes: tuple[str, ...] = ()
    # A point seen at any of these image URLs: the search asks it before downloading one.
    urls: tuple[str, ...] = ()
    # The colour scheme a point must have (its computed ``color_scheme``).
    color_scheme: str | None = None
    # Body placements: a point tagged with ANY of them (a tattoo is in one place; asking for
    # two places means either).
    placement: tuple[str, ...] = ()
    # Only points with no colour facts yet and no recorded failure to read them (the reindex's backfill).
    colour_missing: bool = False
    # Link health (collections/link_checker.py): points keeping ANY of these thumbnails; points
    # whose link was last checked before this moment; points whose link was never checked.
    thumbnails: tuple[str, ...] = ()
    checked_before: datetime | None = None
    link_unchecked: bool = False
    link_state: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.collections or self.tenant is not None or self.tags or self.content_hashes or self.urls
                    or self.color_scheme is not None or self.placement or self.colour_missing
                    or self.thumbnails or self.checked_before is not None or self.link_unchecked
                    or self.link_state is not None)


# Queries by example that an engine may run itself (search_by_examples); "average_vector"
# and "best_score" are Qdrant's Recommendation API strategies, "feedback_naive" its
# relevance-feedback query with the three-weight naive formula.
EXAMPLE_QUERIES: tuple[str, ...] = ("average_vector", "best_score", "feedback_naive")


class QueryUnsupported(GalleryError):
    """The engine has no such query type: the caller falls back (search/refine.py, one place)."""


@dataclass(frozen=True)
class ExampleQuery:
    """A search by marked examples, scored by the engine.

    ``target``: the query's own vector (None when the marks alone are the query); the
    recommendation strategies take it as one more positive example. ``weights``: the
    naive feedback formula's (a, b, c); each positive is a feedback item scored 1, each
    negative one scored 0.
    """

    method: str
    positives: tuple[tuple[float, ...], ...]
    negatives: tuple[tuple[float, ...], ...] = ()
    target: tuple[float, ...] | None = None
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.method not in EXAMPLE_QUERIES:
            raise ValueError(f"unknown query by example {self.method!r}")
        if not (self.positives or self.target is not None):
            raise ValueError("a query by examples needs a positive example or a target")


@dataclass(frozen=True)
class GalleryPage:
    """One page of a scroll: points in id order, and where the next page starts (None: the end)."""

    points: list[GalleryPoint]
    next: str | None


async def pages(store: GalleryStore, space: VectorSpace, filter: GalleryFilter | None = None, *,
                page: int = 1000) -> AsyncIterator[list[GalleryPoint]]:
    """Every point matching ``filter``, a scroll page at a time. Deleting points of a page
    before asking for the next is safe: the cursor is an id, and pages go in id order."""
    start: str | None = None
    while True:
        got = await store.scroll(space, limit=page, filter=filter, start=start)
        yield got.points
        if got.next is None:
            return
        start = got.next


@runtime_checkable
class GalleryStore(Protocol):
    """Upsert, delete, search with filter, count, retrieve, scroll: nothing else crosses this line.

    Each method is async and never blocks the event loop. Reads of a space that was
    never written answer empty, without creating it.
    """

    async def upsert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        """Insert or replace whole points; when it returns they are durable."""

    async def insert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        """Write the points whose id is not stored yet; a stored point is left exactly as it is.
        Atomic per point in the engine: of writers racing for one id, one wins, whatever the
        replica, and each learns which by reading back its ``revision``."""

    async def replace_if(self, space: VectorSpace, point: GalleryPoint, revision: str) -> None:
        """Replace ``point`` only if it is stored with ``revision`` (a compare-and-set, atomic
        in the engine); a point missing, or rewritten since it was read, is left as it is.
        Reading back the new revision tells the caller whether it won."""

    async def facet(self, space: VectorSpace, key: str, filter: GalleryFilter | None = None) -> dict[str | int, int]:
        """How many points matching ``filter`` hold each value of ``key`` (one of
        schema.FACETS: a payload field with an index), exactly, in one call to the engine."""

    async def delete(self, space: VectorSpace, ids: Sequence[str]) -> None:
        """Remove points by id; unknown ids are ignored."""

    async def delete_where(self, space: VectorSpace, filter: GalleryFilter) -> None:
        """Remove every point matching ``filter``, in one call to the engine (a collection's
        points, however many). An empty filter would match everything: ValueError."""

    async def search(
        self,
        space: VectorSpace,
        vector: Sequence[float],
        *,
        limit: int,
        filter: GalleryFilter | None = None,
        min_score: float | None = None,
    ) -> list[GalleryHit]:
        """The nearest points by cosine, best first, without their vectors."""

    async def search_by_examples(
        self,
        space: VectorSpace,
        query: ExampleQuery,
        *,
        limit: int,
        filter: GalleryFilter | None = None,
    ) -> list[GalleryHit]:
        """The best points by ``query``'s own score, best first, without their vectors;
        :class:`QueryUnsupported` where the engine has no such query type."""

    async def count(self, space: VectorSpace, filter: GalleryFilter | None = None) -> int: ...

    async def retrieve(self, space: VectorSpace, ids: Sequence[str]) -> list[GalleryPoint]:
        """The points found among ``ids`` (with vectors), in no particular order."""

    async def scroll(
        self, space: VectorSpace, *, limit: int, filter: GalleryFilter | None = None, start: str | None = None,
        oldest_checked: bool = False,
    ) -> GalleryPage:
        """Every point matching ``filter`` (without vectors), a page of at most ``limit`` at a
        time in id order, from the id ``start`` (a previous page's ``next``) on. Unlike a
        search it reaches every point however many there are: listings and jobs page with it.
        ``oldest_checked``: one page (no ``start``, ``next`` None) of the points with a
        ``link_checked``, oldest first (its range index orders them; points without one are
        not in it: ask for those with ``GalleryFilter.link_unchecked``)."""

    async def optimize(self, space: VectorSpace) -> bool:
        """Build pending indexes now; False where nothing was to do or the engine does it itself."""

    async def close(self) -> None: ...

"""How a :class:`GalleryPoint` is laid out as a Qdrant payload, shared by both engines.

One layout for both engines means a point written by the embedded store reads back
the same from a server (and a later migration is a copy, not a transformation).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from search_gateway.gallery.base import IMAGE_VECTOR, GalleryFilter, GalleryHit, GalleryPoint, VectorSpace

# Bumped when the payload layout changes incompatibly; stored in every point so a
# reader can tell old points from new ones.
# 1: every point in the image layout, bookkeeping records included (their fields reused:
#    a collection's models in ``engine``, a job's state in ``title``...).
# 2: bookkeeping records in the record layout (RECORD below); images unchanged. This
#    reader reads both; the collections' code reads a version-1 record by its old
#    meanings and writes it back in the record layout (collections/records.py). A
#    version-1 reader (an older gateway) misreads a version-2 record (a collection being
#    deleted would look alive to it): replicas of both versions must not share a store.
PAYLOAD_VERSION = 2
# The payload key holding a record's own fields (GalleryPoint.record).
RECORD = "record"
SIZE_CLASS = "size_class"
# Epoch seconds (an integer: a range index orders and filters it on both engines).
LINK_CHECKED = "link_checked"



@dataclass(frozen=True)
class PayloadIndex:
    """A payload index on a field that filters (or facets) use."""

    field: str
    # An integer field (counted by value in facets) rather than a keyword.
    integer: bool = False
    # The tenant key: Qdrant co-locates each tenant's points.
    is_tenant: bool = False
    # Extra HNSW links per value, so filtered searches stay connected. Worth building
    # for fields with few large values only: for tags (dozens of values) and hashes
    # (one point each) they multiplied the index build time for no filter we run often.
    enable_hnsw: bool = True
    # An integer field filtered by range and ordered by (link_checked): a range index.
    range: bool = False


PAYLOAD_INDEXES: tuple[PayloadIndex, ...] = (
    PayloadIndex("collection"),
    PayloadIndex("tenant", is_tenant=True),
    PayloadIndex("tags", enable_hnsw=False),
    PayloadIndex("content_hash", enable_hnsw=False),
    # Asked for every web candidate before it is downloaded (is this URL known?).
    PayloadIndex("urls", enable_hnsw=False),
    # A tenant's bytes, summed by class in one facet (size_class below).
    PayloadIndex(SIZE_CLASS, integer=True, enable_hnsw=False),
    # The colour filter (/search?color=): two values, each a large share of the points.
    PayloadIndex("color_scheme"),
    PayloadIndex("placement", enable_hnsw=False),
    # Results that never rot: which points keep a thumbnail (the blob collector's reachability),
    # and the link checker's oldest-first walk (epoch seconds, ordered by its range index).
    PayloadIndex("thumbnail", enable_hnsw=False),
    PayloadIndex(LINK_CHECKED, integer=True, range=True, enable_hnsw=False),
    PayloadIndex("link_state", enable_hnsw=False),  # the stale points' gauge counts by it
)
# The fields GalleryStore.facet counts by: each needs its index above.
FACETS = frozenset({"collection", SIZE_CLASS})

# Sizes are kept in classes 10% wide so that one facet can add up a tenant's bytes (no engine
# sums a payload field): class k holds sizes up to 1.1**k, so a sum read from the classes is
# at most 10% over the truth, never under.
_CLASS_STEP = math.log(1.1)


def size_class(size: int) -> int:
    """The class of ``size`` bytes: the smallest k with size <= 1.1**k."""
    return 0 if size <= 1 else math.ceil(math.log(size) / _CLASS_STEP - 1e-9)


def class_bytes(k: int) -> int:
    """The most bytes a point of size class ``k`` stands for (what a sum counts)."""
    return math.floor(math.exp(k * _CLASS_STEP) + 1e-6)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _moment(raw: Any) -> datetime | None:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def to_payload(point: GalleryPoint) -> dict[str, Any]:
    if point.record:
        return _record_payload(point)
    return {
        "v": PAYLOAD_VERSION,
        "content_hash": point.content_hash,
        "collection": point.collection,
        "tenant": point.tenant,
        "urls": list(point.urls),
        "source_pages": list(point.source_pages),
        "platform": point.platform,
        "title": point.title,
        "engine": point.engine,
        "first_seen": _iso(point.first_seen),
        "last_seen": _iso(point.last_seen),
        "width": point.width,
        "height": point.height,
        # Names alone for filtering (keyword index), scores beside them.
        "tags": sorted(point.tags),
        "tag_scores": {name: float(score) for name, score in point.tags.items()},
        "bytes": point.bytes,
        SIZE_CLASS: size_class(point.bytes) if point.bytes is not None else None,
        # None, not "": a record written before revisions existed reads the same (IsEmpty matches both).
        "revision": point.revision or None,
        "color_scheme": point.color_scheme,
        "palette": list(point.palette) if point.palette is not None else None,
        "palette_shares": list(point.palette_shares) if point.palette_shares is not None else None,
        "color_error": point.color_error,
        # Like tags: names alone for filtering, scores beside them.
        "placement": sorted(point.placement),
        "placement_scores": {name: float(score) for name, score in point.placement.items()},
        # Results that never rot (absent on points written before: they read as None / 0).
        "thumbnail": point.thumbnail,
        LINK_CHECKED: epoch_s(point.link_checked),
        "link_state": point.link_state,
        "link_reason": point.link_reason,
        "link_failures": point.link_failures or None,
    }


def _record_payload(point: GalleryPoint) -> dict[str, Any]:
    """A record's layout: what filters, counts and the compare-and-set use (identity, tenant,
    bytes and their class, revision) where images keep them, and its own fields apart."""
    return {
        "v": PAYLOAD_VERSION,
        "content_hash": point.content_hash,
        "collection": point.collection,
        "tenant": point.tenant,
        "bytes": point.bytes,
        SIZE_CLASS: size_class(point.bytes) if point.bytes is not None else None,
        "revision": point.revision or None,
        RECORD: dict(point.record),
    }


def from_payload(payload: Mapping[str, Any], vector: list[float] | None) -> GalleryPoint:
    record = payload.get(RECORD)
    if isinstance(record, Mapping) and record:
        return GalleryPoint(
            content_hash=str(payload["content_hash"]),
            vector=tuple(float(x) for x in vector) if vector is not None else None,
            collection=str(payload.get("collection", "web")),
            tenant=payload.get("tenant"),
            bytes=payload.get("bytes"),
            revision=payload.get("revision") or "",
            record=dict(record),
        )
    return GalleryPoint(
        content_hash=str(payload["content_hash"]),
        vector=tuple(float(x) for x in vector) if vector is not None else None,
        collection=str(payload.get("collection", "web")),
        tenant=payload.get("tenant"),
        urls=tuple(payload.get("urls") or ()),
        source_pages=tuple(payload.get("source_pages") or ()),
        platform=payload.get("platform") or "",
        title=payload.get("title") or "",
        engine=payload.get("engine") or "",
        first_seen=_moment(payload.get("first_seen")),
        last_seen=_moment(payload.get("last_seen")),
        width=payload.get("width"),
        height=payload.get("height"),
        tags={str(k): float(v) for k, v in (payload.get("tag_scores") or {}).items()},
        bytes=payload.get("bytes"),
        revision=payload.get("revision") or "",
        # Points written before colour facts and placement existed read as None / empty.
        color_scheme=payload.get("color_scheme"),
        palette=tuple(str(c) for c in palette) if isinstance(palette := payload.get("palette"), list) else None,
        palette_shares=(tuple(float(x) for x in shares)
                        if isinstance(shares := payload.get("palette_shares"), list) else None),
        color_error=payload.get("color_error"),
        placement={str(k): float(v) for k, v in (payload.get("placement_scores") or {}).items()},
        thumbnail=payload.get("thumbnail"),
        link_checked=(datetime.fromtimestamp(checked, UTC)
                      if isinstance(checked := payload.get(LINK_CHECKED), int | float) else None),
        link_state=payload.get("link_state"),
        link_reason=payload.get("link_reason"),
        link_failures=int(payload.get("link_failures") or 0),
    )


def epoch_s(moment: datetime | None) -> int | None:
    """Whole seconds since the epoch (UTC; a naive moment is taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def image_vector(raw: Any) -> list[float] | None:
    """The image vector out of an engine's record (a dict of named vectors, or None)."""
    if isinstance(raw, Mapping):
        found = raw.get(IMAGE_VECTOR)
        return list(found) if found is not None else None
    return None


def checked_vector(space: VectorSpace, point: GalleryPoint) -> list[float]:
    """The point's image vector to store; a missing or wrong-sized one is the caller's
    bug, so it is refused before anything is written."""
    if point.vector is None or len(point.vector) != space.dimension:
        raise ValueError(f"point {point.content_hash!r} needs a {space.dimension}-d vector for {space.name}")
    return list(point.vector)


def engine_ids(ids: Sequence[str]) -> list[Any]:
    """Point ids in the engines' canonical UUID spelling (a malformed id raises ValueError)."""
    return [str(uuid.UUID(i)) for i in ids]


def require_narrow(spec: GalleryFilter) -> GalleryFilter:
    """A delete's filter, checked to restrict something: an empty one would empty the space."""
    if spec.is_empty:
        raise ValueError("a delete by filter needs a filter that restricts it; an empty one matches every point")
    return spec


# The largest scroll page either engine is asked for: a page is held whole in memory.
MAX_PAGE = 1000


def page_limit(limit: int) -> int:
    """A scroll's page size, checked (the caller's bug otherwise, refused before asking the engine)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"a scroll page holds 1 to {MAX_PAGE} points, not {limit}")
    return limit


def facet_key(key: str) -> str:
    """A facet's field, checked (the caller's bug otherwise: an unindexed field cannot be counted)."""
    if key not in FACETS:
        raise ValueError(f"facets count by one of {sorted(FACETS)}, not {key!r}")
    return key


def query_vector(vector: Sequence[float]) -> list[float]:
    return [float(x) for x in vector]


def to_hit(payload: Mapping[str, Any] | None, score: float) -> GalleryHit:
    """A search hit; searches ask for payloads without vectors."""
    return GalleryHit(from_payload(payload or {}, None), float(score))


def to_point(payload: Mapping[str, Any] | None, vector: Any) -> GalleryPoint:
    """A retrieved record (payload and named vectors) as a point."""
    return from_payload(payload or {}, image_vector(vector))

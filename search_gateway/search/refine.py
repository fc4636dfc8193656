"""Refinement by example: a search moved towards results marked relevant (``positive``)
and away from those marked not relevant (``negative``), in the model's current space.

The marks are gallery points (web or the caller's collections), read back with their
stored vectors (``resolve``; another tenant's or an unknown id is 404, as for ``like``).
Four methods, one chosen by ``GATEWAY_REFINE_METHOD`` (docs/benchmarks.md "Relevance
feedback" measured them):

- ``rocchio``: q' = a*q + b*mean(positives) - c*mean(negatives), renormalised, computed
  here and searched by plain cosine.
- ``average_vector``, ``best_score``: Qdrant's Recommendation API strategies (the query's
  own vector, when there is one, is one more positive example).
- ``feedback_naive``: Qdrant's relevance-feedback query; the target is the query's vector
  (or the positives' mean), each positive a feedback item scored 1, each negative 0, and
  the naive formula's three weights were fitted with the ``qdrant-relevance-feedback``
  package (bench/quality/fit_feedback.py).

The engine scores the last three; one without such a query type answers
``QueryUnsupported`` and ``find_refined`` falls back to Rocchio: that is the one place.
Web candidates, scored in the gateway, are always ranked against the Rocchio vector.
Marked pictures never come back: they are dropped by id and by content hash (a web
point and a private copy of the same picture have different ids).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from search_gateway.errors import NotFound, storage_error
from search_gateway.gallery.base import (
    EXAMPLE_QUERIES,
    ExampleQuery,
    GalleryError,
    GalleryPoint,
    QueryUnsupported,
    VectorSpace,
)
from search_gateway.gallery.spaces import result_id
from search_gateway.search.gallery_source import GallerySource
from search_gateway.search.types import RankedResult, SearchQuery

log = logging.getLogger(__name__)

ROCCHIO = "rocchio"
METHODS: tuple[str, ...] = (ROCCHIO, *EXAMPLE_QUERIES)
# Rocchio's (a, b, c), picked by measurement (docs/benchmarks.md "Relevance feedback").
ROCCHIO_WEIGHTS: tuple[float, float, float] = (1.0, 1.0, 1.0)
# The naive feedback formula's (a, b, c), fitted with qdrant-relevance-feedback on a
# near-duplicate set apart from the one measured (bench/quality/fit_feedback.py).
NAIVE_WEIGHTS: tuple[float, float, float] = (0.0649, 1.0, 0.1511)


@dataclass(frozen=True)
class Marked:
    """The marked points as read from the store (vectors unit-normalised by the engines)."""

    positives: tuple[GalleryPoint, ...]
    negatives: tuple[GalleryPoint, ...]

    def hashes(self) -> frozenset[str]:
        return frozenset(p.content_hash for p in (*self.positives, *self.negatives))

    def ids(self) -> frozenset[str]:
        return frozenset(p.id for p in (*self.positives, *self.negatives))

    def tags(self) -> dict[str, float]:
        """The positives' machine tags, each at its best score: a web query for marks alone."""
        tags: dict[str, float] = {}
        for point in self.positives:
            for tag, score in point.tags.items():
                tags[tag] = max(score, tags.get(tag, score))
        return tags


def _vectors(points: Sequence[GalleryPoint]) -> np.ndarray:
    return np.asarray([p.vector for p in points if p.vector is not None], dtype=np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError("the refined query has no direction (the marks cancel the query out)")
    return (vector / norm).astype(np.float32)


def rocchio(query: np.ndarray | None, positives: np.ndarray, negatives: np.ndarray,
            weights: tuple[float, float, float] = ROCCHIO_WEIGHTS) -> np.ndarray:
    """a*q + b*mean(positives) - c*mean(negatives), unit length; a missing part adds nothing.
    Vectors are rows; the query is renormalised first so that a, b, c weigh like with like."""
    a, b, c = weights
    total = np.zeros(positives.shape[1] if positives.size else negatives.shape[1] if negatives.size
                     else np.asarray(query).shape[0], dtype=np.float64)
    if query is not None:
        total += a * _unit(np.asarray(query, dtype=np.float64))
    if positives.size:
        total += b * positives.mean(axis=0)
    if negatives.size:
        total -= c * negatives.mean(axis=0)
    return _unit(total)


def example_query(method: str, query: np.ndarray | None, positives: np.ndarray, negatives: np.ndarray,
                  naive_weights: tuple[float, float, float] = NAIVE_WEIGHTS) -> ExampleQuery | None:
    """What the engine is asked for ``method``; None for Rocchio (a plain nearest search)."""
    if method == ROCCHIO:
        return None

    def rows(array: np.ndarray) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(x) for x in row) for row in array)

    target = None if query is None else tuple(float(x) for x in _unit(np.asarray(query, dtype=np.float64)))
    return ExampleQuery(method, rows(positives), rows(negatives), target, naive_weights)


# A gallery search of ``limit`` results: by the engine's query by examples, or (None) by
# the given vector's cosine.
Find = Callable[[ExampleQuery | None, np.ndarray, int], Awaitable[list[RankedResult]]]


class Refiner:
    """One search's refinement: the marks, the target, and the one fallback to Rocchio."""

    def __init__(self, method: str, marked: Marked, query: np.ndarray | None, *,
                 rocchio_weights: tuple[float, float, float] = ROCCHIO_WEIGHTS,
                 naive_weights: tuple[float, float, float] = NAIVE_WEIGHTS) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown refinement method {method!r}; one of {', '.join(METHODS)}")
        self.method = method
        self.marked = marked
        self._query = query
        self._naive = naive_weights
        self._positives, self._negatives = _vectors(marked.positives), _vectors(marked.negatives)
        # Web candidates are scored in the gateway: against this, whatever the method.
        self.vector = rocchio(query, self._positives, self._negatives, rocchio_weights)
        self.ran = method  # the method that answered, once find_refined has run

    async def find(self, find: Find, limit: int) -> list[RankedResult]:
        """The gallery's best ``limit`` unmarked results by the method; Rocchio where the
        engine has no such query type (the only fallback)."""
        # The marked ones (and another copy of each picture) may be among the best: asked for, dropped.
        wanted = limit + 2 * len(self.marked.ids())
        examples = example_query(self.method, self._query, self._positives, self._negatives, self._naive)
        found: list[RankedResult] | None = None
        if examples is not None:
            try:
                found = await find(examples, self.vector, wanted)
                self.ran = self.method
            except QueryUnsupported as exc:
                log.info("refinement: %s; falling back to rocchio", exc)
        if found is None:
            found = await find(None, self.vector, wanted)
            self.ran = ROCCHIO
        return self.unmarked(found)[:limit]

    def unmarked(self, results: Sequence[RankedResult]) -> list[RankedResult]:
        ids, hashes = self.marked.ids(), self.marked.hashes()
        return [r for r in results
                if r.sha256 not in hashes and (r.point_id or result_id(r.sha256)) not in ids]


async def resolve(gallery: GallerySource | None, query: SearchQuery) -> tuple[VectorSpace, Marked]:
    """The marked points with their stored vectors, in the model's current space; an id
    unknown there, or another tenant's, is 404 exactly as ``like`` answers it."""
    if gallery is None:
        raise NotFound("The gallery is off on this gateway (GATEWAY_GALLERY=off), so marked results find nothing.")
    ids = list(dict.fromkeys((*query.positive, *query.negative)))
    try:
        space, found = await gallery.marked(query.model, ids, query.tenant)
    except GalleryError as exc:
        raise storage_error(exc) from exc
    missing = [id for id in ids if id not in found]
    if space is None or missing:
        first = missing[0] if missing else ids[0]
        raise NotFound(f"No gallery image {first!r} for model {query.model!r} with the weights it serves now.")
    return space, Marked(tuple(found[id] for id in query.positive), tuple(found[id] for id in query.negative))

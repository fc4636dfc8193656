"""Stored feedback in later searches: results the tenant marked relevant for a similar
query move up a little, those marked not relevant move down a little.

The bound, exactly:

* only marks whose query has cosine ``sim >= threshold`` (default 0.95) to this search's
  query count, at most ``max_marks`` (default 50) of them, read in ONE store query with
  the tenant's filter (feedback/marks.py ``near``), started as soon as the query's vector
  is known and run while the gallery and the web are searched, so it adds no time in
  series;
* a result's change is ``± weight * (sim - threshold) / (1 - threshold)``, from the most
  similar mark of it alone (the mark of the most similar query decides; marks do not add
  up), so ``|change| <= weight`` (default 0.03, at most 0.05 by the settings): cosine
  scores differ by far more than that between a match and a stranger, so marks reorder
  near-ties and never lift an unrelated image over a close match;
* only results this search found are moved: a mark never adds a result.

Why 0.95 and not 0.9: measured (docs/benchmarks.md, "Stored feedback boost"), marks of
queries at cosine 0.9-0.95 lowered Recall@10 of held-out Fashion-MNIST queries (97.1 to
96.0-96.9 for weights 0.01-0.05); at 0.95 no weight tried lowered it on either benchmark.

The marks are read through ``StoredMarks``, defined here and implemented in feedback/
(wiring.py passes it in), so that search/ never imports feedback/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from search_gateway.gallery.base import GalleryError, VectorSpace
from search_gateway.gallery.spaces import result_id
from search_gateway.search.types import RankedResult

log = logging.getLogger(__name__)


class NearMark(Protocol):
    @property
    def result(self) -> str: ...

    @property
    def relevant(self) -> bool: ...

    @property
    def similarity(self) -> float: ...


class StoredMarks(Protocol):
    """The tenant's marks of queries like ``vector`` (feedback/marks.py ``MarkStore.near``)."""

    async def near(self, space: VectorSpace, vector: np.ndarray, *, tenant: str, limit: int,
                   min_similarity: float) -> Sequence[NearMark]: ...


@dataclass(frozen=True)
class BoostLimits:
    weight: float = 0.03
    threshold: float = 0.95
    max_marks: int = 50


def nudges(marks: Iterable[NearMark], limits: BoostLimits) -> dict[str, float]:
    """Result id -> score change, from the most similar mark of each result."""
    best: dict[str, NearMark] = {}
    for mark in marks:
        if mark.similarity >= limits.threshold and (mark.result not in best
                                                    or mark.similarity > best[mark.result].similarity):
            best[mark.result] = mark
    span = max(1e-9, 1.0 - limits.threshold)
    return {result: (1.0 if m.relevant else -1.0) * limits.weight * min(1.0, (m.similarity - limits.threshold) / span)
            for result, m in best.items()}


def nudged(results: Iterable[RankedResult], changes: Mapping[str, float]) -> list[RankedResult]:
    """The results with their changes applied (``feedback`` says by how much), best first."""
    out = []
    for r in results:
        change = changes.get(r.point_id or result_id(r.sha256))
        out.append(r if not change else replace(r, score=r.score + change, feedback=change))
    return sorted(out, key=lambda r: -r.score)


class FeedbackBoost:
    def __init__(self, marks: StoredMarks, limits: BoostLimits) -> None:
        self.marks = marks
        self.limits = limits

    async def changes(self, space: VectorSpace, vector: np.ndarray, tenant: str) -> dict[str, float]:
        """The score changes for this search; none when the store cannot answer (the search
        goes on unchanged: feedback is a refinement, never a reason to fail)."""
        try:
            found = await self.marks.near(space, vector, tenant=tenant, limit=self.limits.max_marks,
                                          min_similarity=self.limits.threshold)
        except GalleryError as exc:
            log.warning("feedback marks not read: %s", exc)
            return {}
        return nudges(found, self.limits)

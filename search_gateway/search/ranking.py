"""Stage 4: score each embedded candidate against the query as it arrives.

The same picture at several URLs is ranked once. The embed-ready bytes of the best
few are kept, so that patch attention at the end needs no second download for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from search_gateway.search.colour_filter import colour_fields
from search_gateway.search.types import EmbeddedImage, RankedResult

# A result whose source is stale (link health: gone, changed, unreachable) is ordered as if
# its score were this much lower; the score it reports is unchanged. "Equal" is this band:
# exact float ties between two pictures almost never happen, so a tie rule alone would never
# act, while a bounded nudge puts a working link before a dead one of practically the same
# similarity and never lets a dead near-duplicate fall below a clearly worse live result.
# 0.01 cosine is a third of the stored-feedback cap (0.03, which reorders near-ties only).
STALE_PENALTY = 0.01


def order_score(r: RankedResult) -> float:
    """What results are ordered by: the score, less STALE_PENALTY for a stale one."""
    return r.score - (STALE_PENALTY if r.stale else 0.0)


class Ranking:
    def __init__(self, keep_bytes_of: int) -> None:
        self._keep_n = keep_bytes_of
        self._by_sha: dict[str, RankedResult] = {}
        self._kept: dict[str, bytes] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._by_sha)

    def add(self, embedded: EmbeddedImage, query_vector: np.ndarray) -> None:
        if embedded.sha256 in self._by_sha:
            # The same picture at another URL: one result is enough. A stale gallery result
            # whose picture this search just downloaded (not a cache hit) is live again, at this URL.
            self.duplicates += 1
            known = self._by_sha[embedded.sha256]
            if known.stale and embedded.embed_bytes is not None:
                self._by_sha[embedded.sha256] = replace(known, stale=False, candidate=embedded.candidate)
            return
        score = float(np.dot(embedded.vector, query_vector))
        self._by_sha[embedded.sha256] = RankedResult(embedded.candidate, embedded.sha256, score,
                                                     **colour_fields(embedded.colour))
        if embedded.embed_bytes is not None and self._keep_n:
            self._kept[embedded.sha256] = embedded.embed_bytes
            if len(self._kept) > self._keep_n:
                worst = min(self._kept, key=lambda sha: self._by_sha[sha].score)
                del self._kept[worst]

    def add_ranked(self, result: RankedResult) -> None:
        """A result scored elsewhere (by the gallery's store): the first one of a picture wins."""
        if result.sha256 in self._by_sha:
            self.duplicates += 1
            return
        self._by_sha[result.sha256] = result

    def rescore(self, results: list[RankedResult]) -> None:
        """Results of this ranking with new scores (stored feedback, search/feedback_boost.py)."""
        for r in results:
            if r.sha256 in self._by_sha:
                self._by_sha[r.sha256] = r

    def best(self, n: int, min_score: float | None = None, keep: Callable[[RankedResult], bool] | None = None,
             order: Callable[[list[RankedResult]], list[RankedResult]] | None = None) -> list[RankedResult]:
        """The best ``n`` by score, of those scored at least ``min_score`` that ``keep``
        keeps (the colour filter), in ``order`` when given (the palette's)."""
        ranked = sorted(self._by_sha.values(), key=lambda r: -order_score(r))
        if min_score is not None:
            ranked = [r for r in ranked if r.score >= min_score]
        if keep is not None:
            ranked = [r for r in ranked if keep(r)]
        if order is not None:
            ranked = order(ranked)
        return ranked[:n]

    def kept_bytes(self, sha256: str) -> bytes | None:
        return self._kept.get(sha256)

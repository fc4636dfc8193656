"""Re-ranked results keep link health's order: a stale source goes after a live one of
practically the same combined score (search/ranking.py STALE_PENALTY), as in the global order."""

from __future__ import annotations

import numpy as np

from search_gateway.clients.replies import Candidate
from search_gateway.search.rerank_stage import _reordered
from search_gateway.search.types import RankedResult


def _result(name: str, score: float, *, stale: bool = False) -> RankedResult:
    candidate = Candidate(url=f"https://example.org/{name}.jpg", source_url="", platform="", title=name, engine="")
    return RankedResult(candidate, name * 8, score, source="gallery", stale=stale)


def test_a_stale_result_goes_after_a_live_one_of_nearly_the_same_combined_score() -> None:
    rng = np.random.default_rng(0)
    query = rng.standard_normal((9, 16)).astype(np.float32)
    # The same tokens for both: equal local scores, so the combined scores differ by the
    # global scores' 0.004 alone, less than the stale penalty.
    stale, live = _result("a", 0.804, stale=True), _result("b", 0.800)
    order = [r.sha256 for r in _reordered([stale, live], query, [query.copy(), query.copy()])]
    assert order == [live.sha256, stale.sha256]
    # Without the stale mark the higher score goes first: the order is the scores'.
    order = [r.sha256 for r in _reordered([_result("a", 0.804), live], query, [query.copy(), query.copy()])]
    assert order == ["a" * 8, live.sha256]


def test_a_stale_result_far_ahead_keeps_its_place() -> None:
    rng = np.random.default_rng(1)
    query = rng.standard_normal((9, 16)).astype(np.float32)
    stale, live = _result("a", 0.90, stale=True), _result("b", 0.70)
    order = [r.sha256 for r in _reordered([stale, live], query, [query.copy(), query.copy()])]
    assert order == [stale.sha256, live.sha256]

"""Retrieval metrics from one query's ranking, and their means over queries.

Everything starts from `relevant_ranks`: the 0-based positions of the hits in the
ranking once the query's ignored images are taken out (as if absent, which is how
Revisited Oxford/Paris treats junk and how SOP leaves the query itself out). Then:

- Recall@K: 1 if a hit is within the first K, else 0 (the metric-learning papers'
  "Recall@K", really a hit rate).
- mAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): R = the query's
  number of hits; (1/R) * sum over i = 1..R of precision@i where position i is a
  hit, 0 elsewhere.
- AP, Revisited Oxford/Paris convention (revisitop's `compute_ap`): the area under
  the precision-recall curve by trapezoids, where at the j-th hit (0-based) found at
  rank r the step adds (j/r + (j+1)/(r+1)) / 2 / R, taking j/r as 1 at r = 0. Hits
  the ranking does not reach (a truncated ranking) add nothing.

A query with no hits has no defined score: it is left out of every mean and counted
apart, as revisitop does for mAP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


def relevant_ranks(ranking: Sequence[int] | np.ndarray, relevant: Iterable[int], ignore: Iterable[int] = ()) -> np.ndarray:
    """0-based positions of the relevant gallery indices in `ranking` after removing `ignore`."""
    order = np.asarray(ranking, dtype=np.int64)
    relevant_array = np.fromiter(relevant, dtype=np.int64)
    ignore_array = np.fromiter(ignore, dtype=np.int64)
    kept = ~np.isin(order, ignore_array)
    positions = np.cumsum(kept) - 1
    return positions[kept & np.isin(order, relevant_array)]


def recall_at(ranks: np.ndarray, k: int) -> float:
    return 1.0 if ranks.size and int(ranks.min()) < k else 0.0


def map_at_r(ranks: np.ndarray, n_relevant: int) -> float:
    """Musgrave et al.'s MAP@R for one query; R = n_relevant (> 0)."""
    ranks = np.sort(ranks)
    within = ranks < n_relevant
    hits_so_far = np.arange(1, ranks.size + 1)
    return float(np.sum(hits_so_far[within] / (ranks[within] + 1)) / n_relevant)


def average_precision(ranks: np.ndarray, n_relevant: int) -> float:
    """revisitop's trapezoidal AP for one query; n_relevant counts every hit, found or not."""
    ranks = np.sort(ranks).astype(np.float64)
    found = np.arange(ranks.size, dtype=np.float64)
    before = np.divide(found, ranks, out=np.ones_like(ranks), where=ranks > 0)
    after = (found + 1) / (ranks + 1)
    return float(np.sum((before + after) / 2) / n_relevant)


@dataclass
class MetricTotals:
    """Running sums over queries; `summary()` gives the means."""

    ks: tuple[int, ...]
    queries: int = 0
    without_relevant: int = 0
    recall_hits: dict[int, float] = field(default_factory=dict)
    map_at_r_sum: float = 0.0
    ap_sum: float = 0.0

    def add(self, ranking: np.ndarray, relevant: frozenset[int], ignore: frozenset[int]) -> None:
        n_relevant = len(relevant - ignore)
        if n_relevant == 0:
            self.without_relevant += 1
            return
        ranks = relevant_ranks(ranking, relevant, ignore)
        self.queries += 1
        for k in self.ks:
            self.recall_hits[k] = self.recall_hits.get(k, 0.0) + recall_at(ranks, k)
        self.map_at_r_sum += map_at_r(ranks, n_relevant)
        self.ap_sum += average_precision(ranks, n_relevant)

    def summary(self) -> dict[str, float | int | None]:
        n = self.queries
        result: dict[str, float | int | None] = {
            f"recall@{k}": (self.recall_hits.get(k, 0.0) / n if n else None) for k in self.ks
        }
        result["map@r"] = self.map_at_r_sum / n if n else None
        result["map"] = self.ap_sum / n if n else None
        result["queries"] = n
        result["queries_without_relevant"] = self.without_relevant
        return result

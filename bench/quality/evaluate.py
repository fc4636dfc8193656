"""One benchmark's figures from its vectors: rank every query, accumulate the metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.quality.layouts import Benchmark
from bench.quality.metrics import MetricTotals
from bench.quality.retrieval import ExactCosine, Retriever


def recall_ks(k: int) -> tuple[int, ...]:
    """Recall@1, 5, 10 and the caller's K, each once, in order."""
    return tuple(sorted({1, 5, 10, k}))


def evaluate(
    benchmark: Benchmark,
    gallery_vectors: np.ndarray,
    query_vectors: np.ndarray,
    ks: tuple[int, ...],
    retriever: Callable[[np.ndarray], Retriever] = ExactCosine,
) -> dict[str, object]:
    """Figures for `benchmark`; vectors are rows in the order of its gallery and queries."""
    if len(gallery_vectors) != len(benchmark.gallery) or len(query_vectors) != len(benchmark.queries):
        raise ValueError("one vector per gallery image and per query is needed")
    totals = MetricTotals(ks)
    ranker = retriever(gallery_vectors)
    if benchmark.queries:
        for start, rankings in ranker.search(query_vectors):
            for offset, ranking in enumerate(rankings):
                query = benchmark.queries[start + offset]
                totals.add(ranking, query.relevant, query.ignore)
    figures: dict[str, object] = {"benchmark": benchmark.name, "gallery": len(benchmark.gallery),
                                  "queries_total": len(benchmark.queries), **totals.summary()}
    figures["ranking_depth"] = ranker.depth
    figures["truncated"] = ranker.depth < ranker.size
    return figures

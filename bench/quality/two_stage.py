"""Two-stage search on a benchmark: the global top K re-ranked by local patch evidence.

Per query, stage one is the exact global ranking (`retrieval.ExactCosine`, the query's
ignored images taken out, so that all K places go to real candidates); stage two
re-orders its first K by `search_gateway.search.rerank` (each method, each weight)
and leaves the rest of the global ranking behind them unchanged. The figures are the
same metrics as stage one's, so the two compare row for row; weight 0 reproduces
stage one exactly (the re-ranking keeps ties in stage one's order).

What it adds per query, besides the global search:

- patch fetch, cold: `EmbedPatches` for the query and its K candidates, concurrently,
  nothing cached, as a search would pay when only images are stored (measured on a
  few evenly spaced queries: it is the server's throughput, and it is slow on a CPU);
- patch fetch, cached: reading those K + 1 arrays back from the patch cache on disk,
  as a gallery that stores patch tokens would;
- scoring: `rerank()` over the K candidates, per method.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bench.quality.embedding import ModelIdentity, image_key
from bench.quality.layouts import Benchmark, ImageRef
from bench.quality.metrics import MetricTotals
from bench.quality.patches import PatchCache, fetch_one
from bench.quality.retrieval import ExactCosine
from search_gateway.gallery import tokens
from search_gateway.search import rerank
from tattoo_search.v1 import embed_pb2_grpc


@dataclass(frozen=True, slots=True)
class Plan:
    ks: tuple[int, ...]  # stage one's K, each a row group
    methods: tuple[rerank.Method, ...]
    weights: tuple[float, ...]
    # How the gallery's tokens are kept (`gallery.tokens` names), each a row group; the query's stay full.
    compactions: tuple[str, ...] = ("full",)


def candidates(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """Per query, stage one's first `k` gallery indices, its ignored images taken out."""
    tops: list[np.ndarray] = []
    for start, rankings in ExactCosine(gallery).search(queries):
        for offset, ranking in enumerate(rankings):
            tops.append(_kept(ranking, benchmark.queries[start + offset].ignore)[:k])
    return tops


def _kept(ranking: np.ndarray, ignore: frozenset[int]) -> np.ndarray:
    return ranking[~np.isin(ranking, np.fromiter(ignore, dtype=np.int64))] if ignore else ranking


def evaluate_two_stage(
    benchmark: Benchmark,
    gallery: np.ndarray,
    queries: np.ndarray,
    gallery_patches: Callable[[int], np.ndarray],
    query_patches: Callable[[int], np.ndarray],
    plan: Plan,
    recall_ks: tuple[int, ...],
) -> tuple[list[dict[str, object]], dict[tuple[int, str], list[float]]]:
    """Figures per (K, method, weight), and the scoring times (ms) per (K, method), one per query."""
    totals = {(k, m, w): MetricTotals(recall_ks) for k in plan.ks for m in plan.methods for w in plan.weights}
    scoring_ms: dict[tuple[int, str], list[float]] = {}
    for start, rankings, scores in ExactCosine(gallery).search_scored(queries):
        for offset, ranking in enumerate(rankings):
            number = start + offset
            query = benchmark.queries[number]
            if not query.relevant - query.ignore:
                for total in totals.values():  # counted apart, as stage one counts it
                    total.add(ranking, query.relevant, query.ignore)
                continue
            kept = _kept(ranking, query.ignore)
            own = query_patches(number)
            tops = kept[: max(plan.ks)]
            patches = [gallery_patches(int(i)) for i in tops]
            for k in plan.ks:
                top = tops[:k]
                global_scores = scores[offset, top]
                for method in plan.methods:
                    began = time.perf_counter()
                    reranked = rerank.rerank(global_scores, own, patches[:k], method=method)
                    scoring_ms.setdefault((k, method), []).append(1000 * (time.perf_counter() - began))
                    for weight in plan.weights:
                        order = rerank.combine(global_scores, reranked.local, weight).order
                        new = np.concatenate([top[order], kept[k:]])
                        totals[(k, method, weight)].add(new, query.relevant, query.ignore)
    rows: list[dict[str, object]] = [
        {"benchmark": benchmark.name, "k": k, "method": m, "weight": w, **total.summary()}
        for (k, m, w), total in totals.items()
    ]
    return rows, scoring_ms


def square_grid(patches: np.ndarray) -> tuple[int, int]:
    """The grid of a patch matrix: every served model's grid is square (the cache keeps no grid)."""
    side = round(float(np.sqrt(patches.shape[0])))
    if side * side != patches.shape[0]:
        raise ValueError(f"{patches.shape[0]} patches are not a square grid")
    return side, side


def compacted(patches: dict[str, np.ndarray], compaction: tokens.Compaction) -> dict[str, np.ndarray]:
    """Every image's tokens as stage two would read them back from a gallery that kept them so."""
    return {key: tokens.compact(value, square_grid(value), compaction) for key, value in patches.items()}


def stored_bytes(patches: dict[str, np.ndarray], compaction: tokens.Compaction) -> int:
    """Bytes a point's tokens take under `compaction` (the images' grids are all alike)."""
    first = next(iter(patches.values()))
    return compaction.bytes_per_point(square_grid(first), int(first.shape[1]))


def cached_fetch_ms(cache: PatchCache, keys: Sequence[str]) -> float:
    """Milliseconds to read these images' patches back from the cache (all must be there)."""
    began = time.perf_counter()
    for key in keys:
        if cache.get(key) is None:
            raise KeyError(f"patches of {key} are not in the cache")
    return 1000 * (time.perf_counter() - began)


def cold_fetch_ms(stub: embed_pb2_grpc.EmbedServiceStub, identity: ModelIdentity, refs: Sequence[ImageRef],
                  pool: ThreadPoolExecutor, timeout: float) -> float:
    """Milliseconds to fetch these images' patches from the server, concurrently, no cache."""
    payloads = [image_key(ref)[1] for ref in refs]  # read before the clock starts: a store would hand bytes
    began = time.perf_counter()
    list(pool.map(lambda data: fetch_one(stub, identity, data, "a latency sample", timeout), payloads))
    return 1000 * (time.perf_counter() - began)


def sample(count: int, wanted: int) -> list[int]:
    """Up to `wanted` evenly spaced indices of `count` (first and last included)."""
    if wanted <= 0 or count == 0:
        return []
    return sorted({round(float(i)) for i in np.linspace(0, count - 1, min(wanted, count))})


def summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median and 95th percentile (nearest rank) in ms, and how many values."""
    if not values:
        return {"median": None, "p95": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return {"median": round(statistics.median(ordered), 3), "p95": round(p95, 3), "n": len(ordered)}

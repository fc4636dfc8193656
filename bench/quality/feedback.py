"""Relevance feedback, measured the way it is measured: `python -m bench.quality --feedback-rounds N`.

For each query: rank the gallery, take the first 10 results not seen yet, mark each
relevant or not from the ground truth (a perfect user), refine the query with every
mark so far (at most 20 of each kind, the newest kept, as the API allows), rank again,
and so on for N rounds. Round 0 is the plain search.

Figures (Recall@10, mAP@R) are computed on the *residual* ranking (the usual protocol for relevance
feedback: Ruthven and Lalmas 2003): the results already shown and marked are taken
out of the ranking and out of the query's hits, since the product never shows a marked
result again. So Recall@10 after round r is "a new hit among the next 10", and a query
whose hits have all been shown drops out (the number of queries left is reported).
So that rounds compare over the same queries, "found" is also reported: the share of
each query's hits seen in the pages shown so far (10 per round), over every query.

Every method runs through the product's own code: `search_gateway.search.refine`'s
Refiner over the real embedded store (qdrant-edge, `EdgeGalleryStore`) holding the
benchmark's gallery as points, so what is measured is what ships: Rocchio's vector
searched by cosine, Qdrant's recommendation strategies and relevance-feedback query
run by the engine (or the one fallback where it has none).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality.layouts import Benchmark
from bench.quality.metrics import MetricTotals
from search_gateway.gallery.base import ExampleQuery, GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.edge import EdgeGalleryStore
from search_gateway.gallery.gallery import Gallery
from search_gateway.gallery.qdrant import MEMORY, QdrantGalleryStore
from search_gateway.gallery.spaces import WEB
from search_gateway.search import refine, rerank
from search_gateway.search.gallery_source import ranked

SHOWN = 10  # results a user looks at and marks per round
MOST = 20  # marks of each kind a search takes (the API's limit)


@dataclass(frozen=True)
class Method:
    """One variant measured: a refinement method and its weights."""

    name: str
    method: str
    rocchio_weights: tuple[float, float, float] = refine.ROCCHIO_WEIGHTS
    naive_weights: tuple[float, float, float] = refine.NAIVE_WEIGHTS


# (query vector, positives, negatives, excluded gallery indices) -> gallery indices, best first.
Search = Callable[[np.ndarray, Sequence[int], Sequence[int], frozenset[int]], Awaitable[np.ndarray]]


async def rounds_of(benchmark: Benchmark, queries: np.ndarray, rounds: int, search: Search,
                    ks: tuple[int, ...] = (10,)) -> list[dict[str, object]]:
    """Figures after 0..rounds rounds of marking; `search` ranks for one query."""
    totals = [MetricTotals(ks) for _ in range(rounds + 1)]
    found = [0.0] * (rounds + 1)
    counted = 0
    for number, query in enumerate(benchmark.queries):
        hits = query.relevant - query.ignore
        counted += bool(hits)
        positives: list[int] = []
        negatives: list[int] = []
        shown: set[int] = set()
        for round_ in range(rounds + 1):
            hidden = frozenset(shown | query.ignore)
            ranking = await search(queries[number], positives[-MOST:], negatives[-MOST:], hidden)
            ranking = np.asarray([i for i in ranking if i not in hidden], dtype=np.int64)
            totals[round_].add(ranking, query.relevant, hidden)
            for index in ranking[:SHOWN]:
                (positives if int(index) in query.relevant else negatives).append(int(index))
                shown.add(int(index))
            if hits:
                found[round_] += len(hits & shown) / len(hits)
    # "found": the share of a query's hits the user has seen after this round's page,
    # over every query: unlike the residual figures, the same queries in every round.
    return [{"round": r, **t.summary(), "found": found[r] / counted if counted else None}
            for r, t in enumerate(totals)]


class StoreSearch:
    """The benchmark's gallery in a real qdrant-edge store, searched through refine.Refiner."""

    def __init__(self, store: GalleryStore, space: VectorSpace, vectors: np.ndarray, depth: int) -> None:
        self.store, self.space, self.vectors, self.depth = store, space, vectors, depth
        self.gallery = Gallery(store)
        self.fallbacks = 0

    @classmethod
    async def open(cls, folder: Path, vectors: np.ndarray, depth: int, engine: str = "edge") -> StoreSearch:
        # "qdrant-local": qdrant-client's local mode, the server's query semantics in Python
        # (it has average_vector, which qdrant-edge lacks); not what the default build ships.
        store: GalleryStore = (await EdgeGalleryStore.open(folder, exact=True) if engine == "edge"
                               else await QdrantGalleryStore.open(MEMORY))
        space = VectorSpace("bench", "feedback", int(vectors.shape[1]))
        points = [GalleryPoint(content_hash=_hash(i), vector=tuple(float(x) for x in row), collection=WEB)
                  for i, row in enumerate(vectors)]
        for start in range(0, len(points), 500):
            await store.upsert(space, points[start:start + 500])
        return cls(store, space, vectors, depth)

    def searcher(self, method: Method) -> Search:
        async def search(query: np.ndarray, positives: Sequence[int], negatives: Sequence[int],
                         hidden: frozenset[int]) -> np.ndarray:
            if not positives and not negatives:  # round 0: the plain search
                hits = await self.gallery.find(self.space, query, limit=self.depth, collections=(WEB,))
                return np.asarray([int(h.point.content_hash, 16) for h in hits], dtype=np.int64)
            marked = refine.Marked(tuple(self._point(i) for i in positives), tuple(self._point(i) for i in negatives))
            refiner = refine.Refiner(method.method, marked, query, rocchio_weights=method.rocchio_weights,
                                     naive_weights=method.naive_weights)

            async def find(examples: ExampleQuery | None, vector: np.ndarray, limit: int) -> list:  # type: ignore[type-arg]
                hits = await self.gallery.find(self.space, vector, limit=min(limit, 1000), collections=(WEB,),
                                               examples=examples)
                return [ranked(hit) for hit in hits]

            found = await refiner.find(find, self.depth)
            if refiner.ran != method.method:
                self.fallbacks += 1
            return np.asarray([int(r.sha256, 16) for r in found], dtype=np.int64)

        return search

    def _point(self, index: int) -> GalleryPoint:
        return GalleryPoint(content_hash=_hash(index), vector=tuple(float(x) for x in self.vectors[index]),
                            collection=WEB)

    async def close(self) -> None:
        await self.store.close()


def _hash(index: int) -> str:
    return f"{index:064x}"  # a content hash that is the gallery index, read back from each hit


async def measure(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, rounds: int,
                  methods: Sequence[Method], depth: int = 500, engine: str = "edge") -> list[dict[str, object]]:
    """Rows (method, round, figures) for one benchmark, every method over one store."""
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="feedback-") as folder:
        store = await StoreSearch.open(Path(folder) / "gallery", gallery.astype(np.float32),
                                       min(depth, len(benchmark.gallery)), engine)
        try:
            for method in methods:
                store.fallbacks = 0
                for row in await rounds_of(benchmark, queries, rounds, store.searcher(method)):
                    rows.append({"benchmark": benchmark.name, "method": method.name, **row,
                                 "fallbacks": store.fallbacks, "engine": engine})
        finally:
            await store.close()
    return rows


def run(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, rounds: int,
        methods: Sequence[Method], engine: str = "edge") -> list[dict[str, object]]:
    return asyncio.run(measure(benchmark, gallery, queries, rounds, methods, engine=engine))


def export(path: Path, benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray) -> None:
    """Vectors and hits for bench.quality.fit_feedback (which runs in a venv of its own)."""
    # An ignored image is the query itself (Fashion-MNIST, SOP) or junk; to the trainer it is
    # a hit, so that the query found first is not mined as a "negative" context item.
    hits = [sorted(q.relevant | q.ignore) for q in benchmark.queries]
    offsets = np.cumsum([0, *(len(h) for h in hits)]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, gallery=gallery.astype(np.float32), queries=queries.astype(np.float32),
             relevant_offsets=offsets, relevant_values=np.asarray([i for h in hits for i in h], dtype=np.int64))


def parse_methods(text: str) -> list[Method]:
    """`rocchio:1/1/0.5,best_score,feedback_naive:1/1/0.5`: a method, optionally its a/b/c."""
    methods = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, weights = item.partition(":")
        if name not in refine.METHODS:
            raise ValueError(f"--feedback-methods: {name!r} is not one of {', '.join(refine.METHODS)}")
        if not weights:
            methods.append(Method(name, name))
            continue
        try:
            a, b, c = (float(w) for w in weights.split("/"))
        except ValueError:
            raise ValueError(f"--feedback-methods: weights are a/b/c, three numbers, not {weights!r}") from None
        if name == refine.ROCCHIO:
            methods.append(Method(item, name, rocchio_weights=(a, b, c)))
        elif name == "feedback_naive":
            methods.append(Method(item, name, naive_weights=(a, b, c)))
        else:
            raise ValueError(f"--feedback-methods: {name} takes no weights")
    if not methods:
        raise ValueError("--feedback-methods names no method")
    return methods


def table(rows: Sequence[dict[str, object]], rounds: int) -> str:
    """Method x round, per benchmark: R@10 / mAP@R in %, and the queries still measured."""
    head = ["benchmark", "method", *(f"round {r}: R@10 / mAP@R (queries) / found" for r in range(rounds + 1))]
    lines = ["", "Relevance feedback: residual ranking after each round of 10 marks",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((str(r["benchmark"]), str(r["method"])) for r in rows))
    for benchmark, method in keys:
        mine = {int(r["round"]): r for r in rows  # type: ignore[call-overload]
                if r["benchmark"] == benchmark and r["method"] == method}
        cells = [benchmark, method]
        for r in range(rounds + 1):
            row = mine[r]
            cells.append(f"{_percent(row['recall@10'])} / {_percent(row['map@r'])} ({row['queries']}) / "
                         f"{_percent(row['found'])}")
        fallbacks = mine[rounds]["fallbacks"]
        if fallbacks:
            cells[1] += f" (fell back to rocchio {fallbacks}x)"
        if mine[rounds].get("engine", "edge") != "edge":
            cells[1] += f" ({mine[rounds]['engine']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value: object) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}"  # type: ignore[arg-type]


async def patch_feedback(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, tops: Sequence[np.ndarray],
                         query_patches: Callable[[int], np.ndarray], gallery_patches: Callable[[int], np.ndarray],
                         methods: Sequence[Method], depth: int = 500) -> list[dict[str, object]]:
    """The two-stage patch score as the feedback model, no user: each query's first 10
    results (`tops`, exact cosine) scored by mutual nearest patches (search/rerank.py);
    the better half becomes the feedback items scored 1, the other half 0, and the query
    is refined once. Figures on the whole ranking (nothing was shown), against round 0."""
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="feedback-") as folder:
        store = await StoreSearch.open(Path(folder) / "gallery", gallery.astype(np.float32),
                                       min(depth, len(benchmark.gallery)))
        try:
            for method in methods:
                totals = MetricTotals((10,))
                for number, query in enumerate(benchmark.queries):
                    top = [int(i) for i in tops[number][:SHOWN]]
                    local = rerank.local_scores(query_patches(number), [gallery_patches(i) for i in top])
                    order = np.argsort(-local, kind="stable")
                    better = {top[int(i)] for i in order[: len(top) // 2]}
                    positives = store.vectors[[i for i in top if i in better]]
                    negatives = store.vectors[[i for i in top if i not in better]]
                    vector = refine.rocchio(queries[number], positives, negatives, method.rocchio_weights)
                    examples = refine.example_query(method.method, queries[number], positives, negatives,
                                                    method.naive_weights)
                    hits = await store.gallery.find(store.space, vector, limit=store.depth, collections=(WEB,),
                                                    examples=examples)
                    ranking = np.asarray([int(h.point.content_hash, 16) for h in hits], dtype=np.int64)
                    totals.add(ranking, query.relevant, query.ignore)
                rows.append({"benchmark": benchmark.name, "method": f"{method.name}, patch feedback",
                             **totals.summary()})
        finally:
            await store.close()
    return rows

"""bench.quality's relevance-feedback loop (`--feedback-rounds`) on a tiny synthetic set,
through the real embedded store (qdrant-edge) and search/refine.py, as the bench runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench.quality import feedback
from bench.quality.layouts import Benchmark, ImageRef, Query
from bench.quality.retrieval import ExactCosine


def _synthetic() -> tuple[Benchmark, np.ndarray, np.ndarray]:
    """Three clusters of 8 points in 16-d; one query near each cluster's centre (its hits: the cluster)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, 16))
    gallery = np.concatenate([c + 0.9 * rng.normal(size=(8, 16)) for c in centres]).astype(np.float32)
    queries = (centres + 0.3 * rng.normal(size=(3, 16))).astype(np.float32)
    refs = tuple(ImageRef(Path(f"g{i}.jpg")) for i in range(len(gallery)))
    qs = tuple(Query(ImageRef(Path(f"q{c}.jpg")), frozenset(range(8 * c, 8 * c + 8)), frozenset(), str(c))
               for c in range(3))
    return Benchmark("synthetic", Path("."), refs, qs), gallery, queries


def test_each_round_marks_the_next_ten_from_the_ground_truth_and_never_shows_them_again(tmp_path: Path) -> None:
    benchmark, gallery, queries = _synthetic()
    calls: list[tuple[list[int], list[int], frozenset[int], list[int]]] = []

    async def run() -> list[dict[str, object]]:
        normalised = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        store = await feedback.StoreSearch.open(tmp_path / "g", normalised, depth=24)
        try:
            search = store.searcher(feedback.Method("rocchio", "rocchio"))

            async def recorded(query: np.ndarray, positives: Sequence[int], negatives: Sequence[int],
                               hidden: frozenset[int]) -> np.ndarray:
                ranking = await search(query, positives, negatives, hidden)
                calls.append((list(positives), list(negatives), hidden, [int(i) for i in ranking]))
                return ranking

            return await feedback.rounds_of(benchmark, queries, 2, recorded)
        finally:
            await store.close()

    rows = asyncio.run(run())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert len(calls) == 3 * 3  # three queries, rounds 0..2
    for q in range(3):
        first, second, third = calls[3 * q: 3 * q + 3]
        relevant = benchmark.queries[q].relevant
        assert first[0] == first[1] == [] and len(first[3]) == 24  # round 0: the plain search, whole gallery
        page = first[3][:10]
        assert second[0] == [i for i in page if i in relevant] and second[1] == [i for i in page if i not in relevant]
        assert second[2] == frozenset(page) and not set(page) & set(second[3])  # marked: never shown again
        assert len(third[0]) + len(third[1]) == 20 and not set(third[2]) & set(third[3])
    # Round 0 is exact cosine: every query's first result is in its own cluster here.
    assert rows[0]["recall@10"] == 1.0 and rows[0]["queries"] == 3
    found = [float(r["found"]) for r in rows]  # type: ignore[arg-type]
    assert found == sorted(found) and 0 < found[0] <= 1


def test_every_method_runs_through_the_store_and_average_vector_falls_back(tmp_path: Path) -> None:
    benchmark, gallery, queries = _synthetic()
    methods = feedback.parse_methods("rocchio:1/1/1,average_vector,best_score,feedback_naive:1/1/0.5")
    rows = feedback.run(benchmark, gallery, queries, 1, methods)
    by = {(r["method"], r["round"]): r for r in rows}
    assert {m.name for m in methods} == {name for name, _ in by}
    assert by[("average_vector", 1)]["fallbacks"] == 3  # qdrant-edge has no average_vector: Rocchio, 3 queries
    assert by[("best_score", 1)]["fallbacks"] == 0 and by[("feedback_naive:1/1/0.5", 1)]["fallbacks"] == 0
    assert "| synthetic | rocchio:1/1/1 |" in feedback.table(rows, 1)


def test_methods_are_checked() -> None:
    with pytest.raises(ValueError, match="not one of"):
        feedback.parse_methods("magic")
    with pytest.raises(ValueError, match="takes no weights"):
        feedback.parse_methods("best_score:1/1/1")
    with pytest.raises(ValueError, match="a/b/c"):
        feedback.parse_methods("rocchio:1/1")


def test_qdrant_client_local_mode_runs_average_vector_itself() -> None:
    benchmark, gallery, queries = _synthetic()
    rows = feedback.run(benchmark, gallery, queries, 1, feedback.parse_methods("average_vector"), "qdrant-local")
    assert [r["fallbacks"] for r in rows] == [0, 0] and rows[1]["engine"] == "qdrant-local"
    assert "(qdrant-local)" in feedback.table(rows, 1)


def test_patch_scores_as_the_feedback_model_refine_once_without_marks(tmp_path: Path) -> None:
    benchmark, gallery, queries = _synthetic()
    rng = np.random.default_rng(3)
    # Patches that agree with the clusters: a point's patches are its vector plus noise.
    g_patches = [np.stack([v + 0.1 * rng.normal(size=16) for _ in range(4)]) for v in gallery]
    q_patches = [np.stack([v + 0.1 * rng.normal(size=16) for _ in range(4)]) for v in queries]
    tops = [ranking[:10] for _, rankings in ExactCosine(gallery).search(queries) for ranking in rankings]
    rows = asyncio.run(feedback.patch_feedback(benchmark, gallery, queries, tops, q_patches.__getitem__,
                                               g_patches.__getitem__, feedback.parse_methods("rocchio:1/1/1")))
    assert [r["method"] for r in rows] == ["rocchio:1/1/1, patch feedback"] and rows[0]["queries"] == 3
    assert rows[0]["recall@10"] == 1.0

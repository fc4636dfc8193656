"""Two-stage search: the re-ranking scores worked by hand, the harness's re-ranked figures,
and `python -m bench.quality --rerank` end to end against a real embed server.

The server runs a tiny random clip on loopback port 0: its figures mean nothing about
search quality; what is checked is that patches are fetched, cached, scored and reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench.quality.__main__ import main
from bench.quality.layouts import Benchmark, ImageRef, Query
from bench.quality.near_duplicates import Sizes, generate
from bench.quality.two_stage import Plan, evaluate_two_stage
from embed_server.config import EmbedSettings
from embed_server.server import create_server
from search_gateway.search.rerank import RerankInputError, combine, local_scores, rerank
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.background import BackgroundServer, wait_for_health

# Two query patches and two candidates of two patches each, in 2-D:
#   q1 = (1, 0), q2 = (0, 1)
#   A: a1 = (1, 0), a2 = (0.6, 0.8)     cosines q1: [1, 0.6]   q2: [0, 0.8]
#   B: b1 = (0.8, 0.6), b2 = (-2, 0)    cosines q1: [0.8, -1]  q2: [0.6, 0]   (b2 normalised to (-1, 0))
QUERY = np.array([[1.0, 0.0], [0.0, 1.0]])
A = np.array([[1.0, 0.0], [0.6, 0.8]])
B = np.array([[0.8, 0.6], [-2.0, 0.0]])


def test_maxsim_is_the_mean_of_each_query_patchs_best_cosine() -> None:
    # A: q1's best is a1 (1), q2's best is a2 (0.8): (1 + 0.8) / 2 = 0.9.
    # B: q1's best is b1 (0.8), q2's best is b1 (0.6): (0.8 + 0.6) / 2 = 0.7.
    assert local_scores(QUERY, [A, B], "maxsim") == pytest.approx([0.9, 0.7])


def test_mutual_counts_query_patches_whose_best_match_picks_them_back() -> None:
    # A: q1 -> a1 and a1's best query patch is q1 (1 > 0); q2 -> a2 and a2's best is q2 (0.8 > 0.6): 2 of 2.
    # B: q1 -> b1 and b1's best is q1 (0.8 > 0.6): mutual; q2 -> b1 too, but b1 picked q1: 1 of 2.
    assert local_scores(QUERY, [A, B], "mutual") == pytest.approx([1.0, 0.5])


def test_maxsim_favours_a_candidate_that_contains_the_query() -> None:
    # The query shows one motif (q1); the candidate shows it beside another (q1 and q2):
    # every query patch is found, 1.0. Turned round, q2 finds nothing better than 0: (1 + 0) / 2.
    motif, scene = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    assert local_scores(motif, [scene], "maxsim")[0] == pytest.approx(1.0)
    assert local_scores(scene, [motif], "maxsim")[0] == pytest.approx(0.5)


def test_the_weight_mixes_global_and_local_scores() -> None:
    # Stage one put B first (0.7 > 0.6). With maxsim (A 0.9, B 0.7):
    #   weight 0.5: A = 0.5 * 0.6 + 0.5 * 0.9 = 0.75, B = 0.5 * 0.7 + 0.5 * 0.7 = 0.7 -> A first.
    #   weight 0: the global scores alone, B stays first.
    global_scores = np.array([0.6, 0.7])
    mixed = rerank(global_scores, QUERY, [A, B], method="maxsim", weight=0.5)
    assert mixed.scores == pytest.approx([0.75, 0.7])
    assert mixed.local == pytest.approx([0.9, 0.7])
    assert mixed.order.tolist() == [0, 1]
    assert rerank(global_scores, QUERY, [A, B], weight=0.0).order.tolist() == [1, 0]
    # weight 1, local alone: A 0.9 before B 0.7.
    assert rerank(global_scores, QUERY, [A, B], weight=1.0).order.tolist() == [0, 1]


def test_ties_keep_stage_ones_order() -> None:
    assert combine(np.array([0.5, 0.5, 0.9]), np.array([0.2, 0.2, 0.2]), 0.5).order.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda: local_scores(QUERY, [np.ones((2, 3))]), "dimension 3, the query's 2"),
        (lambda: local_scores(np.zeros((0, 2)), [A]), "the query's patches must be a non-empty"),
        (lambda: local_scores(QUERY, [np.array([[np.nan, 0.0]])]), "not a finite number"),
        (lambda: local_scores(QUERY, [A], "mean"),  # type: ignore[arg-type]
         "unknown re-ranking method 'mean'; valid: maxsim, mutual"),
        (lambda: rerank(np.array([0.5]), QUERY, [A, B]), "1 global score(s) for 2 candidate(s)"),
        (lambda: combine(np.array([0.5]), np.array([0.5]), 1.5), "between 0 and 1, got 1.5"),
        (lambda: combine(np.array([np.inf]), np.array([0.5]), 0.5), "a global score is not a finite number"),
    ],
)
def test_bad_input_is_explained(call: object, says: str) -> None:
    with pytest.raises(RerankInputError) as raised:
        call()  # type: ignore[operator]
    assert says in str(raised.value)


def test_re_ranking_moves_the_hit_within_the_top_k_only() -> None:
    # Gallery g0 = (1, 0), g1 = (0.8, 0.6), g2 = (0, 1); the query (1, 0): stage one ranks
    # g0, g1, g2, and g1 is the only hit, so Recall@1 is 0. Patches (maxsim against the query's
    # (1, 0), (0, 1)): g0 (1, 0), (1, 0) -> (1 + 0) / 2 = 0.5; g1 (1, 0), (0, 1) -> 1; g2 -> 0.5.
    benchmark = Benchmark("toy", Path("."), tuple(ImageRef(Path(f"g{i}.png")) for i in range(3)),
                          (Query(ImageRef(Path("q.png")), frozenset({1}), frozenset(), "x"),))
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    patches = [np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0]] * 2)]
    rows, timings = evaluate_two_stage(benchmark, gallery, np.array([[1.0, 0.0]]), lambda i: patches[i],
                                       lambda _: QUERY, Plan((1, 2), ("maxsim",), (0.0, 0.5, 1.0)), (1, 5))
    recall = {(r["k"], r["weight"]): r["recall@1"] for r in rows}
    # K = 1: only g0 is re-ranked, g1 stays second. K = 2, weight 0: stage one's order.
    # K = 2, weight 0.5: g0 0.5 * 1 + 0.5 * 0.5 = 0.75, g1 0.5 * 0.8 + 0.5 * 1 = 0.9: g1 first.
    assert recall == {(1, 0.0): 0.0, (1, 0.5): 0.0, (1, 1.0): 0.0, (2, 0.0): 0.0, (2, 0.5): 1.0, (2, 1.0): 1.0}
    # The hit at rank 1 (0-based): AP = (0 / 1 + 1 / 2) / 2 = 0.25; at rank 0, AP = 1.
    assert {(r["k"], r["weight"]): r["map"] for r in rows}[(2, 0.0)] == pytest.approx(0.25)
    assert {(r["k"], r["weight"]): r["map"] for r in rows}[(2, 1.0)] == pytest.approx(1.0)
    assert sorted(timings) == [(1, "maxsim"), (2, "maxsim")] and all(len(t) == 1 for t in timings.values())


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    settings = EmbedSettings.from_env({"EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "tiny", "EMBED_MODELS": "clip",
                                       "EMBED_RUNTIME": "torch", "EMBED_HOST": "127.0.0.1", "EMBED_PORT": "0"})
    with BackgroundServer(lambda: create_server(settings)) as running:
        with grpc.insecure_channel(running.target) as channel:
            wait_for_health(channel)
        yield running


def _images_through_the_model(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        models = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=10).models
    return next(m.image_batches.items for m in models if m.name == "clip")


def test_rerank_through_the_cli_then_from_the_patch_cache(server: BackgroundServer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "bench", Sizes(sources=4, views=3, queries_per_source=1, distractors=2), seed=0)
    argv = ["--layout", "folder", "--path", str(tmp_path / "bench"), "--target", server.target, "--model", "clip",
            "--k", "3", "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "out.json"),
            "--rerank", "--rerank-k", "2,4", "--rerank-weights", "0,1", "--latency-queries", "1"]
    before = _images_through_the_model(server.target)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out.json").read_text())
    staged = report["two_stage"]
    # 4 queries, each with its top 4 of a 14-image gallery: patches of the 4 queries and at most 14 gallery images.
    assert staged["patches"]["fetched"] == staged["patches"]["images"] and 8 <= staged["patches"]["images"] <= 18
    # One latency query fetched again, cold, at each K: 1 + 2 and 1 + 4 images.
    through = _images_through_the_model(server.target) - before
    assert through == report["embedding"]["embedded"] + staged["patches"]["fetched"] + 3 + 5
    assert len(list((tmp_path / "cache" / "clip").glob("*/patches/*.npy"))) == staged["patches"]["images"]
    (stage_one,) = report["results"]
    rows = {(r["k"], r["method"], r["weight"]): r for r in staged["results"]}
    assert sorted(rows) == [(k, m, w) for k in (2, 4) for m in ("maxsim", "mutual") for w in (0, 1)]
    metrics = ("recall@1", "recall@3", "recall@5", "recall@10", "map@r", "map", "queries")
    for (_, _, weight), row in rows.items():
        if weight == 0:  # the local score has no say: stage one exactly
            assert {m: row[m] for m in metrics} == {m: stage_one[m] for m in metrics}
        assert 0.0 <= row["recall@1"] <= row["recall@5"] <= 1.0
    for entry in staged["latency"]:
        assert entry["fetch_cold_ms"]["n"] == 1 and entry["fetch_cached_ms"]["n"] == 4
        assert entry["scoring_ms"]["maxsim"]["n"] == entry["scoring_ms"]["mutual"]["n"] == 4
    assert "| folder | full | " in printed and " | 4 | maxsim | 1 |" in printed
    assert "| folder | - | - | - | none (global only) | - |" in printed

    # Again without latency samples: every patch comes from the cache, the server computes nothing.
    before = _images_through_the_model(server.target)
    assert main([*argv[:-1], "0"]) == 0
    again = json.loads((tmp_path / "out.json").read_text())["two_stage"]
    assert _images_through_the_model(server.target) == before
    assert (again["patches"]["fetched"], again["patches"]["from_cache"]) == (0, staged["patches"]["images"])
    assert again["results"] == staged["results"]

    # The gallery's tokens compacted (issue 23): the same grid per compaction, full unchanged.
    assert main([*argv[:-1], "0", "--token-compaction", "full,binary,pool2-int8"]) == 0
    compacted = json.loads((tmp_path / "out.json").read_text())["two_stage"]
    assert compacted["compactions"] == ["full", "full-binary", "pool2-int8"]
    by = {name: [r for r in compacted["results"] if r["compaction"] == name] for name in compacted["compactions"]}
    assert by["full"] == staged["results"]
    patches = next(iter(np.load(f) for f in (tmp_path / "cache" / "clip").glob("*/patches/*.npy")))
    side = int(round(patches.shape[0] ** 0.5))
    assert {r["bytes_per_point"] for r in by["full-binary"]} == {patches.shape[0] * patches.shape[1] // 8}
    assert {r["bytes_per_point"] for r in by["pool2-int8"]} == {(-(-side // 2)) ** 2 * patches.shape[1]}
    for rows_of in by.values():  # weight 0 is stage one whatever the tokens
        assert all(r["recall@1"] == stage_one["recall@1"] for r in rows_of if r["weight"] == 0)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--rerank-k", "0"], "--rerank-k needs at least one K, each at least 1"),
        (["--rerank-k", "ten"], "--rerank-k takes whole numbers"),
        (["--rerank-weights", "0.5,1.5"], "each between 0 and 1"),
        (["--rerank-methods", "maxsim,colbert"], "valid methods are maxsim, mutual"),
        (["--token-compaction", "pool2-int4"], "--token-compaction: unknown token compaction"),
    ],
)
def test_bad_rerank_options_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        options: list[str], says: str) -> None:
    # No server at this address and no benchmark at this path: the options are refused first.
    argv = ["--layout", "folder", "--path", str(tmp_path / "absent"), "--target", "127.0.0.1:9", "--rerank", *options]
    assert main(argv) == 2
    assert says in capsys.readouterr().err

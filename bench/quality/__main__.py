"""`python -m bench.quality`: retrieval quality of a served model on a benchmark.

    python -m bench.quality --layout folder --path var/quality/near-dup --model clip
    python -m bench.quality --layout inshop --path "In-shop Clothes Retrieval Benchmark" --model dinov2
    python -m bench.quality --layout sop --path Stanford_Online_Products --k 100
    python -m bench.quality --layout revisited --path data/datasets/roxford5k --model dinov2
    python -m bench.quality --layout idx --path /usr/share/datasets/fashion-mnist --limit 2000 --model squeezenet
    python -m bench.quality --layout folder --path var/quality/near-dup --rerank --rerank-k 20,50,100
    TATTOO_API_KEY=... python -m bench.quality --layout folder --path var/quality/near-dup \
        --retrieval gateway --gateway http://127.0.0.1:8000

Reads the benchmark (`layouts`), embeds every distinct image once through the embed
server's `Embed` (`embedding`, cached on disk), ranks each query over the gallery by
exact cosine (`retrieval`), or with `--retrieval gateway` through a running gateway's
own gallery search (`gateway`: a private collection made and deleted for the run), and
prints Recall@1/5/10/K, mAP@R and mAP (Revisited
Oxford/Paris convention) with the numbers of queries and images, as a Markdown table
and as JSON (`--json`). With `--rerank`, also two-stage search (`two_stage`): each
query's global top K re-ranked by local evidence from `EmbedPatches` patch tokens
(`patches`, cached on disk next to the vectors), the same figures per K, method and
weight, and the latency it adds per query. Exit status: 0 done, 1 the server failed,
2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.quality import feedback, layouts, two_stage
from bench.quality.embedding import (
    EmbeddingError,
    ModelIdentity,
    VectorCache,
    describe_model,
    embed_images,
    image_key,
)
from bench.quality.evaluate import evaluate, recall_ks
from bench.quality.gateway import GatewayClient, GatewayError, GatewayGallery
from bench.quality.layouts import Benchmark, ImageRef, LayoutError
from bench.quality.patches import PatchCache, fetch_patches
from search_gateway.gallery import tokens
from search_gateway.search import rerank
from tattoo_search.v1 import embed_pb2_grpc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
    parser.add_argument("--path", required=True, type=Path, help="the benchmark's list file or folder")
    parser.add_argument("--target", default="127.0.0.1:50051", help="embed server address (default %(default)s)")
    parser.add_argument("--model", default="clip")
    parser.add_argument("--k", type=int, default=100, help="the K of Recall@K besides 1, 5 and 10 (default %(default)s)")
    parser.add_argument("--limit", type=int, help="idx only: the first N images (default: all)")
    parser.add_argument("--protocol", default="medium,hard", help="revisited only: medium, hard or both (default)")
    parser.add_argument("--json", type=Path,
                        help="where to write the figures (default var/quality/<layout>-<model>-<precision>.json)")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/quality/vectors"))
    parser.add_argument("--no-cache", action="store_true", help="embed everything again and keep nothing")
    parser.add_argument("--batch", type=int, default=16, help="images per Embed call (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="Embed calls in flight (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120, help="deadline of one Embed call, seconds")
    parser.add_argument("--retrieval", choices=("exact", "gateway"), default="exact",
                        help="rank by exact cosine in memory, or through a running gateway's gallery search "
                             "(--gateway; API key from TATTOO_API_KEY) (default %(default)s)")
    parser.add_argument("--gateway", help="the gateway's URL, for --retrieval gateway (e.g. http://127.0.0.1:8000)")
    parser.add_argument("--rerank", action="store_true", help="also measure two-stage search (re-ranking by patches)")
    parser.add_argument("--rerank-k", default="20,50,100",
                        help="stage one's K values, comma-separated (default %(default)s)")
    parser.add_argument("--rerank-methods", default=",".join(rerank.METHODS),
                        help="local scores to try: maxsim, mutual (default %(default)s)")
    parser.add_argument("--rerank-weights", default="0.25,0.5,0.75,1",
                        help="weights of the local score, each in [0, 1] (default %(default)s)")
    parser.add_argument("--token-compaction", default="full",
                        help="two-stage only: how the gallery's patch tokens are kept, comma-separated, each measured "
                             "(search_gateway/gallery/tokens.py: full, pool2, top32, with -fp16 / -int8 / -binary; "
                             "the query's own tokens stay full) (default %(default)s)")
    parser.add_argument("--latency-queries", type=int, default=5,
                        help="queries whose patches are fetched cold again to time it, per K (default %(default)s)")
    parser.add_argument("--patch-concurrency", type=int, default=8,
                        help="EmbedPatches calls in flight (one image each; default %(default)s)")
    parser.add_argument("--feedback-rounds", type=int, default=0,
                        help="also measure relevance feedback: N rounds of marking the first 10 results from the "
                             "ground truth and refining (`feedback`; default: not measured)")
    parser.add_argument("--feedback-methods", default=_FEEDBACK_METHODS,
                        help="refinement methods to compare, each optionally with its a/b/c weights "
                             "(default %(default)s)")
    parser.add_argument("--feedback-export", type=Path,
                        help="write the vectors and hits to this .npz for bench.quality.fit_feedback (first "
                             "benchmark; the --feedback-queries subset is not applied)")
    parser.add_argument("--feedback-engine", choices=("edge", "qdrant-local"), default="edge",
                        help="the store the methods run in: qdrant-edge (what the gateway ships by default) or "
                             "qdrant-client's local mode (the server's semantics; it has average_vector) "
                             "(default %(default)s)")
    parser.add_argument("--feedback-patches", action="store_true",
                        help="also try the two-stage patch score as the feedback model (no marks: the better half "
                             "of the first 10 by mutual nearest patches is the positive feedback), one round")
    parser.add_argument("--feedback-queries", type=int,
                        help="relevance feedback over the first N queries only (default: all)")
    return parser


_FEEDBACK_METHODS = "rocchio:1/1/0.5,rocchio:1/0.75/0.15,rocchio:1/2/1,average_vector,best_score,feedback_naive"


def _plan(args: argparse.Namespace) -> two_stage.Plan:
    """The two-stage grid from the options; ValueError with a sentence when one is wrong."""
    try:
        ks = tuple(sorted({int(v) for v in args.rerank_k.split(",") if v.strip()}))
        weights = tuple(dict.fromkeys(float(v) for v in args.rerank_weights.split(",") if v.strip()))
    except ValueError as exc:
        raise ValueError(f"--rerank-k takes whole numbers and --rerank-weights numbers, comma-separated ({exc})") \
            from exc
    methods = tuple(dict.fromkeys(m.strip() for m in args.rerank_methods.split(",") if m.strip()))
    if not ks or ks[0] < 1:
        raise ValueError("--rerank-k needs at least one K, each at least 1")
    if not weights or not all(0.0 <= w <= 1.0 for w in weights):
        raise ValueError("--rerank-weights needs at least one weight, each between 0 and 1")
    unknown = [m for m in methods if m not in rerank.METHODS]
    if not methods or unknown:
        raise ValueError(f"--rerank-methods: valid methods are {', '.join(rerank.METHODS)}; got {args.rerank_methods!r}")
    if args.latency_queries < 0 or args.patch_concurrency < 1:
        raise ValueError("--latency-queries must be at least 0 and --patch-concurrency at least 1")
    try:
        compactions = tuple(dict.fromkeys(tokens.parse(v).name for v in args.token_compaction.split(",") if v.strip()))
    except tokens.TokenCompactionError as exc:
        raise ValueError(f"--token-compaction: {exc}") from exc
    if not compactions:
        raise ValueError("--token-compaction needs at least one compaction, e.g. full")
    return two_stage.Plan(ks, methods, weights, compactions)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.k < 1 or args.batch < 1 or args.concurrency < 1:
        print("quality: --k, --batch and --concurrency must be at least 1", file=sys.stderr)
        return 2
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    if args.retrieval == "gateway" and (not args.gateway or args.rerank):
        print("quality: --retrieval gateway needs --gateway URL and does not take --rerank", file=sys.stderr)
        return 2
    try:
        methods = feedback.parse_methods(args.feedback_methods) if args.feedback_rounds else []
        if args.feedback_rounds < 0 or (args.feedback_queries is not None and args.feedback_queries < 1):
            raise ValueError("--feedback-rounds must be at least 0 and --feedback-queries at least 1")
        plan = _plan(args) if args.rerank else None
        benchmarks = layouts.read(args.layout, args.path, protocols, limit=args.limit,
                                  scratch=args.cache_dir.parent / "idx")
    except (LayoutError, ValueError, OSError) as exc:
        print(f"quality: {exc}", file=sys.stderr)
        return 2
    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=15)
        except grpc.FutureTimeoutError:
            print(f"quality: no embed server answers at {args.target}", file=sys.stderr)
            return 1
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        try:
            identity = describe_model(stub, args.model)
            cache = None if args.no_cache else VectorCache(args.cache_dir, identity)
            # Benchmarks of one run (two protocols) share their images: embed the union once.
            refs = list(dict.fromkeys(ref for b in benchmarks for ref in _refs(b)))
            vectors, stats = embed_images(stub, identity, refs, cache, batch_size=args.batch,
                                          concurrency=args.concurrency, timeout=args.timeout)
        except EmbeddingError as exc:
            print(f"quality: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"quality: cannot read an image: {exc}", file=sys.stderr)
            return 2
    row_of = {ref: i for i, ref in enumerate(refs)}
    ks = recall_ks(args.k)
    results = []
    for benchmark in benchmarks:
        gallery = vectors[[row_of[ref] for ref in benchmark.gallery]]
        queries = vectors[[row_of[q.image] for q in benchmark.queries]]
        if args.retrieval == "gateway":
            try:
                results.append(_through_gateway(args, benchmark, gallery, queries, ks))
            except (GatewayError, OSError) as exc:
                print(f"quality: {exc}", file=sys.stderr)
                return 1
        else:
            results.append(evaluate(benchmark, gallery, queries, ks))
    staged = None
    if plan is not None:
        try:
            staged = _two_stage(args, plan, identity, benchmarks, vectors, row_of, ks)
        except EmbeddingError as exc:
            print(f"quality: {exc}", file=sys.stderr)
            return 1

    if args.feedback_export is not None:
        first = benchmarks[0]
        feedback.export(args.feedback_export, first, vectors[[row_of[ref] for ref in first.gallery]],
                        vectors[[row_of[q.image] for q in first.queries]])
    marked: list[dict[str, object]] = []
    patched: list[dict[str, object]] = []
    for benchmark in benchmarks if args.feedback_rounds else []:
        if args.feedback_queries is not None:
            benchmark = replace(benchmark, queries=benchmark.queries[: args.feedback_queries])
        gallery = vectors[[row_of[ref] for ref in benchmark.gallery]]
        queries = vectors[[row_of[q.image] for q in benchmark.queries]]
        marked += feedback.run(benchmark, gallery, queries, args.feedback_rounds, methods, args.feedback_engine)
        if args.feedback_patches:
            patched += _patch_feedback(args, identity, benchmark, gallery, queries, methods)

    warnings = _warnings(identity, results)
    report = {"layout": args.layout, "path": str(args.path), "target": args.target, "k": args.k,
              "model": asdict(identity), "embedding": asdict(stats), "warnings": warnings, "results": results}
    if staged is not None:
        report["two_stage"] = staged
    if marked:
        report["feedback"] = {"rounds": args.feedback_rounds, "shown": feedback.SHOWN, "results": marked,
                              "patch_feedback": patched}
    out = args.json or Path("var/quality") / f"{args.layout}-{identity.model}-{identity.precision}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(_table(identity.model, identity.weights, f"{identity.runtime} {identity.precision}", ks, results))
    if staged is not None:
        print(_two_stage_tables(results, staged))
    if marked:
        print(feedback.table(marked, args.feedback_rounds))
    for row in patched:
        print(f"{row['benchmark']} | {row['method']} | R@10 {_percent(row['recall@10'])} | "
              f"mAP@R {_percent(row['map@r'])} ({row['queries']} queries)")
    for warning in warnings:
        print(f"note: {warning}")
    print(f"embedded {stats.embedded} image(s), {stats.from_cache} from the cache, in {stats.seconds:.1f} s; wrote {out}")
    return 0


def _through_gateway(args: argparse.Namespace, benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray,
                     ks: tuple[int, ...]) -> dict[str, object]:
    """Figures as the gateway's gallery search ranks (`gateway`); its collection is gone afterwards."""
    client = GatewayClient(args.gateway, os.environ.get("TATTOO_API_KEY") or None, timeout=args.timeout)
    with GatewayGallery(client, benchmark, args.model, batch=args.batch) as ranker:
        figures = evaluate(benchmark, gallery, queries, ks, retriever=ranker.retriever())
        figures["retrieval"] = f"gateway {args.gateway}, max_results {ranker.limit} ({ranker.limit_source})"
    return figures


def _two_stage(args: argparse.Namespace, plan: two_stage.Plan, identity: ModelIdentity, benchmarks: list[Benchmark],
               vectors: np.ndarray, row_of: dict[ImageRef, int], ks: tuple[int, ...]) -> dict[str, object]:
    """Patches for every query and its top K, then figures and latency per K (see `two_stage`)."""
    deepest = max(plan.ks)
    tops, needed = [], []
    for benchmark in benchmarks:
        gallery = vectors[[row_of[ref] for ref in benchmark.gallery]]
        queries = vectors[[row_of[q.image] for q in benchmark.queries]]
        tops.append(two_stage.candidates(benchmark, gallery, queries, deepest))
        needed += [q.image for q in benchmark.queries]
        needed += [benchmark.gallery[int(i)] for top in tops[-1] for i in top]
    needed = list(dict.fromkeys(needed))
    key_of = {ref: image_key(ref)[0] for ref in needed}
    cache = None if args.no_cache else PatchCache(args.cache_dir, identity)
    with grpc.insecure_channel(args.target) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        patches, stats = fetch_patches(stub, identity, needed, cache, concurrency=args.patch_concurrency,
                                       timeout=args.timeout)
        # Latency on the first benchmark only: a second protocol of Revisited has the same queries and images.
        first, first_tops = benchmarks[0], tops[0]
        chosen = two_stage.sample(len(first.queries), args.latency_queries)
        cold: dict[int, list[float]] = {k: [] for k in plan.ks}
        with ThreadPoolExecutor(max_workers=args.patch_concurrency) as pool:
            for k in plan.ks:
                for number in chosen:
                    refs = [first.queries[number].image, *(first.gallery[int(i)] for i in first_tops[number][:k])]
                    cold[k].append(two_stage.cold_fetch_ms(stub, identity, refs, pool, args.timeout))
    cached: dict[int, list[float]] = {k: [] for k in plan.ks}
    if cache is not None:
        for k in plan.ks:
            for number, top in enumerate(first_tops):
                keys = [key_of[first.queries[number].image], *(key_of[first.gallery[int(i)]] for i in top[:k])]
                cached[k].append(two_stage.cached_fetch_ms(cache, keys))
    rows: list[dict[str, object]] = []
    scoring: dict[tuple[int, str], list[float]] = {}
    for name in plan.compactions:
        compaction = tokens.parse(name)
        stored = two_stage.compacted(patches, compaction)
        for benchmark in benchmarks:
            gallery = vectors[[row_of[ref] for ref in benchmark.gallery]]
            queries = vectors[[row_of[q.image] for q in benchmark.queries]]
            found, times = two_stage.evaluate_two_stage(
                benchmark, gallery, queries, _lookup(stored, key_of, benchmark.gallery),
                _lookup(patches, key_of, [q.image for q in benchmark.queries]), plan, ks)
            rows += [{**row, "compaction": name, "bytes_per_point": two_stage.stored_bytes(patches, compaction)}
                     for row in found]
            for (k, method), values in times.items():
                # Scoring time of the first compaction only (full tokens unless another was asked first).
                if name == plan.compactions[0]:
                    scoring.setdefault((k, method), []).extend(values)
    latency = [{"k": k, "fetch_cold_ms": two_stage.summarise(cold[k]),
                "fetch_cached_ms": two_stage.summarise(cached[k]),
                "scoring_ms": {m: two_stage.summarise(scoring.get((k, m), [])) for m in plan.methods}}
               for k in plan.ks]
    return {"ks": list(plan.ks), "methods": list(plan.methods), "weights": list(plan.weights),
            "compactions": list(plan.compactions),
            "default": {"method": rerank.DEFAULT_METHOD, "weight": rerank.DEFAULT_WEIGHT},
            "patches": asdict(stats), "latency_queries": chosen, "results": rows, "latency": latency}


def _patch_feedback(args: argparse.Namespace, identity: ModelIdentity, benchmark: Benchmark, gallery: np.ndarray,
                    queries: np.ndarray, methods: Sequence[feedback.Method]) -> list[dict[str, object]]:
    """Patches of every query and its first 10, then one round of patch-score feedback."""
    tops = two_stage.candidates(benchmark, gallery, queries, feedback.SHOWN)
    refs = list(dict.fromkeys([*(q.image for q in benchmark.queries),
                               *(benchmark.gallery[int(i)] for top in tops for i in top)]))
    key_of = {ref: image_key(ref)[0] for ref in refs}
    cache = None if args.no_cache else PatchCache(args.cache_dir, identity)
    with grpc.insecure_channel(args.target) as channel:
        patches, _ = fetch_patches(embed_pb2_grpc.EmbedServiceStub(channel), identity, refs, cache,
                                   concurrency=args.patch_concurrency, timeout=args.timeout)
    return asyncio.run(feedback.patch_feedback(
        benchmark, gallery, queries, tops, _lookup(patches, key_of, [q.image for q in benchmark.queries]),
        _lookup(patches, key_of, benchmark.gallery), methods))


def _lookup(patches: dict[str, np.ndarray], key_of: dict[ImageRef, str],
            refs: Sequence[ImageRef]) -> Callable[[int], np.ndarray]:
    return lambda index: patches[key_of[refs[index]]]


def _two_stage_tables(results: list[dict[str, object]], staged: dict[str, Any]) -> str:
    head = ["benchmark", "tokens", "bytes/point", "K", "stage two", "weight", "R@1", "R@5", "R@10", "mAP@R", "mAP"]
    lines = ["", "Two-stage search: the global top K re-ranked by local patch evidence",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    metrics = ("recall@1", "recall@5", "recall@10", "map@r", "map")
    for result in results:
        cells = [str(result["benchmark"]), "-", "-", "-", "none (global only)", "-", *(_percent(result[m]) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    for row in staged["results"]:
        cells = [str(row["benchmark"]), str(row["compaction"]), str(row["bytes_per_point"]), str(row["k"]),
                 str(row["method"]), f"{row['weight']:g}",
                 *(_percent(row[m]) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    methods = staged["methods"]
    head = ["K", "patch fetch, cold", "patch fetch, cached", *(f"scoring, {m}" for m in methods)]
    lines += ["", f"Added latency per query, ms: median / p95 (queries); scoring with {staged['compactions'][0]} tokens",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in staged["latency"]:
        cells = [str(entry["k"]), _latency(entry["fetch_cold_ms"]), _latency(entry["fetch_cached_ms"]),
                 *(_latency(entry["scoring_ms"][m]) for m in methods)]
        lines.append("| " + " | ".join(cells) + " |")
    patches = staged["patches"]
    lines.append(f"patches of {patches['images']} image(s): {patches['fetched']} fetched, {patches['from_cache']} "
                 f"from the cache, in {patches['seconds']:.1f} s")
    return "\n".join(lines)


def _latency(summary: dict[str, Any]) -> str:
    if not summary["n"]:
        return "n/a"
    return f"{summary['median']:.1f} / {summary['p95']:.1f} ({summary['n']})"


def _refs(benchmark: Benchmark) -> list[ImageRef]:
    return [*benchmark.gallery, *(q.image for q in benchmark.queries)]


def _warnings(identity: ModelIdentity, results: list[dict[str, object]]) -> list[str]:
    warnings = []
    if identity.weights != "WEIGHTS_SOURCE_PRETRAINED":
        warnings.append(f"{identity.model} runs with {identity.weights} weights: these figures say nothing about "
                        "the pretrained model")
    if identity.fingerprint_source == "fallback":
        warnings.append("the server sends no weights fingerprint; vectors are cached under weights source, runtime, "
                        "precision, architecture and device, which cannot tell two seeds or checkpoints apart "
                        "(use --no-cache after changing weights)")
    for result in results:
        if result["queries_without_relevant"]:
            warnings.append(f"{result['benchmark']}: {result['queries_without_relevant']} query(ies) have no relevant "
                            "gallery image and are left out of every figure")
        if result["truncated"]:
            warnings.append(f"{result['benchmark']}: rankings stop at {result['ranking_depth']}; mAP is truncated there")
    return warnings


def _table(model: str, weights: str, runtime: str, ks: tuple[int, ...], results: list[dict[str, object]]) -> str:
    weights = weights.removeprefix("WEIGHTS_SOURCE_").lower()
    head = ["benchmark", "model", "weights", "runtime", "queries", "gallery",
            *(f"R@{k}" for k in ks), "mAP@R", "mAP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [str(r["benchmark"]), model, weights, runtime, str(r["queries"]), str(r["gallery"]),
                 *(_percent(r[f"recall@{k}"]) for k in ks), _percent(r["map@r"]), _percent(r["map"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value: object) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}"  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())

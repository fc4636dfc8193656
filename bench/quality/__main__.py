"""`python -m bench.quality`: retrieval quality of a served model on a benchmark.

    python -m bench.quality --layout folder --path var/quality/near-dup --model clip
    python -m bench.quality --layout inshop --path "In-shop Clothes Retrieval Benchmark" --model dinov2
    python -m bench.quality --layout sop --path Stanford_Online_Products --k 100
    python -m bench.quality --layout revisited --path data/datasets/roxford5k --model dinov2

Reads the benchmark (`layouts`), embeds every distinct image once through the embed
server's `Embed` (`embedding`, cached on disk), ranks each query over the gallery by
exact cosine (`retrieval`) and prints Recall@1/5/10/K, mAP@R and mAP (Revisited
Oxford/Paris convention) with the numbers of queries and images, as a Markdown table
and as JSON (`--json`). Exit status: 0 done, 1 the server failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import grpc

from bench.quality import layouts
from bench.quality.embedding import EmbeddingError, ModelIdentity, VectorCache, describe_model, embed_images
from bench.quality.evaluate import evaluate, recall_ks
from bench.quality.layouts import Benchmark, ImageRef, LayoutError
from tattoo_search.v1 import embed_pb2_grpc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
    parser.add_argument("--path", required=True, type=Path, help="the benchmark's list file or folder")
    parser.add_argument("--target", default="127.0.0.1:50051", help="embed server address (default %(default)s)")
    parser.add_argument("--model", default="clip")
    parser.add_argument("--k", type=int, default=100, help="the K of Recall@K besides 1, 5 and 10 (default %(default)s)")
    parser.add_argument("--protocol", default="medium,hard", help="revisited only: medium, hard or both (default)")
    parser.add_argument("--json", type=Path, help="where to write the figures (default var/quality/<layout>-<model>-<precision>.json)")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/quality/vectors"))
    parser.add_argument("--no-cache", action="store_true", help="embed everything again and keep nothing")
    parser.add_argument("--batch", type=int, default=16, help="images per Embed call (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="Embed calls in flight (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120, help="deadline of one Embed call, seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.k < 1 or args.batch < 1 or args.concurrency < 1:
        print("quality: --k, --batch and --concurrency must be at least 1", file=sys.stderr)
        return 2
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    try:
        benchmarks = layouts.read(args.layout, args.path, protocols)
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
        results.append(evaluate(benchmark, gallery, queries, ks))

    warnings = _warnings(identity, results)
    report = {"layout": args.layout, "path": str(args.path), "target": args.target, "k": args.k,
              "model": asdict(identity), "embedding": asdict(stats), "warnings": warnings, "results": results}
    out = args.json or Path("var/quality") / f"{args.layout}-{identity.model}-{identity.precision}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(_table(identity.model, identity.weights, f"{identity.runtime} {identity.precision}", ks, results))
    for warning in warnings:
        print(f"note: {warning}")
    print(f"embedded {stats.embedded} image(s), {stats.from_cache} from the cache, in {stats.seconds:.1f} s; wrote {out}")
    return 0


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

"""Gallery search with and without re-ranking from stored patch tokens, same run (issue 23).

    .venv/bin/python -m bench.gallery_rerank --target 127.0.0.1:50231 --sizes 10000,100000

What one `sources=gallery` image search does for its results, timed per query, against
an embedded qdrant-edge store (the default engine) of N points in a squeezenet space:

- without: the query's `Embed` (the embed server at --target, squeezenet), then the
  store's search for the best `max(max_results, K)`;
- with: `Embed` and `EmbedPatches` at once (search/query_vectors.py), the same store
  search, the K results' stored tokens read by id from the sibling space
  (gallery/patch_tokens.py: one retrieve) and scored (search/rerank.py, mutual, decoded
  `full-binary` tokens), the new order made.

Points: seeded random unit vectors (the store's cost does not depend on what they mean)
with seeded random tokens of the stored size (10,816 bytes, base64 in the payload), the
store optimised (HNSW built) before timing. The HTTP layer, the JSON and the gallery's
own visibility checks are the same in both arms and left out: the ratio is an upper
bound of the end-to-end one. Prints a Markdown table; --json writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from search_gateway.clients.backends import EmbedClient
from search_gateway.gallery.base import GalleryPoint, VectorSpace
from search_gateway.gallery.factory import open_store
from search_gateway.gallery.patch_tokens import PatchTokens, TokenStore
from search_gateway.search import rerank
from tests.support.images import jpeg

MODEL, DIM, GRID = "squeezenet", 512, (13, 13)


async def _fill(store: object, space: VectorSpace, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tokens = TokenStore(store)  # type: ignore[arg-type]
    for lo in range(0, size, 500):
        hi = min(size, lo + 500)
        vectors = rng.standard_normal((hi - lo, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        points = [GalleryPoint(content_hash=f"{seed:04d}{i:060d}", vector=tuple(vectors[i - lo].tolist()))
                  for i in range(lo, hi)]
        await store.upsert(space, points)  # type: ignore[attr-defined]
        await tokens.put(space, [(p, PatchTokens(GRID, rng.standard_normal((GRID[0] * GRID[1], DIM))
                                                 .astype(np.float32))) for p in points])
    await store.optimize(space)  # type: ignore[attr-defined]
    await store.optimize(VectorSpace(f"{MODEL}@tokens-full-binary", space.weights_fingerprint, 1))  # type: ignore[attr-defined]


async def _one(store: object, space: VectorSpace, embed: EmbedClient, image: bytes, k: int, limit: int,
               with_rerank: bool, parts: dict[str, list[float]] | None = None) -> float:
    began = time.perf_counter()
    if with_rerank:
        reply, patches = await asyncio.gather(embed.embed(MODEL, [image]), embed.embed_patches(MODEL, image))
        query_tokens = patches.tokens
    else:
        reply = await embed.embed(MODEL, [image])
    embedded = time.perf_counter()
    vector = reply.vectors[0] / np.linalg.norm(reply.vectors[0])
    hits = await store.search(space, vector.tolist(), limit=max(limit, k))  # type: ignore[attr-defined]
    searched = time.perf_counter()
    if with_rerank:
        top = hits[:k]
        stored = await TokenStore(store).get(space, [h.point for h in top])  # type: ignore[arg-type]
        read = time.perf_counter()
        have = [h for h in top if h.point.id in stored]
        local = rerank.local_scores(query_tokens, [stored[h.point.id] for h in have])
        rerank.combine(np.array([h.score for h in have], dtype=np.float32), local)
        scored = time.perf_counter()
        if parts is not None:
            for name, ms in (("embed", embedded - began), ("search", searched - embedded),
                             ("tokens_read", read - searched), ("scoring", scored - read)):
                parts.setdefault(name, []).append(1000 * ms)
    elif parts is not None:
        for name, ms in (("embed", embedded - began), ("search", searched - embedded)):
            parts.setdefault(name, []).append(1000 * ms)
    return 1000 * (time.perf_counter() - began)


async def _measure(args: argparse.Namespace, size: int, folder: Path) -> dict[str, object]:
    channel = grpc.aio.insecure_channel(args.target)
    embed = EmbedClient(channel, timeout_s=60)
    models = {m.name: m for m in await embed.list_models()}
    space = VectorSpace(MODEL, models[MODEL].weights_fingerprint, DIM)
    store = await open_store(path=folder / f"store-{size}")
    began = time.perf_counter()
    await _fill(store, space, size, seed=size)
    fill_s = time.perf_counter() - began
    images = [jpeg(1000 + i, (320, 240)) for i in range(args.queries)]
    for image in images[:3]:  # warm both paths
        await _one(store, space, embed, image, args.k, args.max_results, True)
    times: dict[str, list[float]] = {"without": [], "with": []}
    parts: dict[str, dict[str, list[float]]] = {"without": {}, "with": {}}
    for image in images:  # interleaved: a load change on the shared CPU hits both arms alike
        times["without"].append(await _one(store, space, embed, image, args.k, args.max_results, False,
                                           parts["without"]))
        times["with"].append(await _one(store, space, embed, image, args.k, args.max_results, True, parts["with"]))
    await store.close()  # type: ignore[attr-defined]
    await channel.close()
    p50 = {arm: statistics.median(values) for arm, values in times.items()}
    p95 = {arm: sorted(v)[int(0.95 * (len(v) - 1))] for arm, v in times.items()}
    return {"points": size, "fill_s": round(fill_s, 1), "k": args.k, "queries": args.queries,
            "p50_ms": {a: round(v, 1) for a, v in p50.items()}, "p95_ms": {a: round(v, 1) for a, v in p95.items()},
            "ratio_p50": round(p50["with"] / p50["without"], 2),
            "parts_p50_ms": {arm: {name: round(statistics.median(v), 1) for name, v in named.items()}
                             for arm, named in parts.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gallery_rerank", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051", help="embed server serving squeezenet")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--k", type=int, default=20, help="results re-ranked (GATEWAY_RERANK_K's default)")
    parser.add_argument("--max-results", type=int, default=15)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--dir", type=Path, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for size in (int(v) for v in args.sizes.split(",")):
            rows.append(asyncio.run(_measure(args, size, Path(folder))))
            print(json.dumps(rows[-1]), flush=True)
    print("| points | K | without: p50 / p95 ms | with re-ranking: p50 / p95 ms | p50 ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        p50, p95 = r["p50_ms"], r["p95_ms"]
        print(f"| {r['points']} | {r['k']} | {p50['without']} / {p95['without']} | "  # type: ignore[index]
              f"{p50['with']} / {p95['with']} | {r['ratio_p50']} |")  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

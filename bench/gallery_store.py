"""The gallery store's own cost: ingest, index build, query latency, recall, RAM and disk.

Fills a fresh embedded store (qdrant-edge-py, through the ``GalleryStore`` interface
and its real payloads) with N points, builds the HNSW index (``optimize``, in a child
process as the store does it), then times top-50 queries without a filter, with the
gallery's default filter (collection ``web``, ~80 % of points) and with a tenant
filter (~5 %), and measures recall@50 against exact search in numpy for a sweep of
``hnsw_ef``. Seeded random unit vectors by default; ``--vectors`` takes real
embeddings from a .npy file (rows are points; the last ``--queries`` rows are held
out as queries), which is where recall means something.

    .venv/bin/python -m bench.gallery_store                          # 10k and 100k, 512-d
    .venv/bin/python -m bench.gallery_store --points 10000 --ef 32,64,128,256
    .venv/bin/python -m bench.gallery_store --vectors embeddings.npy --points 50000
    .venv/bin/python -m bench.gallery_store --url http://qdrant:6333   # a Qdrant server instead
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from search_gateway.gallery.base import GalleryFilter, GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.edge import EdgeGalleryStore
from search_gateway.gallery.qdrant import QdrantGalleryStore

LIMIT = 50
BATCH = 500
TAGS = [f"style-{i}" for i in range(20)] + [f"subject-{i}" for i in range(20)]
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
    model = next((line.split(":")[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return f"{model}; {' '.join(wanted) or 'no avx2'}"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_mib(folder: Path) -> tuple[float, float]:
    """(allocated, apparent) MiB: the engine preallocates sparse mmap files."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    allocated = sum(p.stat().st_blocks * 512 for p in files)
    apparent = sum(p.stat().st_size for p in files)
    return allocated / 2**20, apparent / 2**20


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def point(i: int, vector: np.ndarray, rng: np.random.Generator) -> tuple[GalleryPoint, str | None]:
    # 80 % public ("web"), 20 % private across four tenants (5 % each).
    tenant = None if i % 5 else f"t{(i // 5) % 4}"
    tags = rng.choice(len(TAGS), size=3, replace=False)
    return (
        GalleryPoint(
            content_hash=f"{i:064x}",
            vector=tuple(vector.tolist()),
            collection="web" if tenant is None else f"private-{tenant}",
            tenant=tenant,
            urls=(f"https://i.pinimg.example/originals/{i:08x}.jpg",),
            source_pages=(f"https://www.pinterest.example/pin/{i}/",),
            platform="pinterest",
            title=f"geometric mandala tattoo {i}",
            engine="ddgs",
            first_seen=T0,
            last_seen=T0,
            width=736,
            height=1104,
            tags={TAGS[t]: round(float(rng.random()) * 0.3, 4) for t in tags},
        ),
        tenant,
    )


def exact_top(data: np.ndarray, mask: np.ndarray | None, query: np.ndarray) -> set[int]:
    scores = data @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    k = min(LIMIT, int(np.isfinite(scores).sum()))
    return set(np.argpartition(-scores, k - 1)[:k].tolist())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


async def run_size(args: argparse.Namespace, data: np.ndarray, queries: np.ndarray) -> dict[str, object]:
    n, dim = data.shape
    space = VectorSpace("bench", "seeded-random" if not args.vectors else Path(args.vectors).name, dim)
    folder = Path(tempfile.mkdtemp(prefix="gallery-bench-", dir=args.workdir))
    store: GalleryStore
    if args.url:
        store = await QdrantGalleryStore.open(args.url, prefix=f"bench-{int(time.time())}-")
    else:
        store = await EdgeGalleryStore.open(folder / "gallery")
    rng = np.random.default_rng(1)
    rss_before = rss_mib()
    tenants: list[str | None] = []
    try:
        started = time.perf_counter()
        for lo in range(0, n, BATCH):
            made = [point(i, data[i], rng) for i in range(lo, min(n, lo + BATCH))]
            tenants.extend(t for _, t in made)
            await store.upsert(space, [p for p, _ in made])
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        optimized = await store.optimize(space)
        build_s = time.perf_counter() - started
        tenant_arr = np.array([t or "" for t in tenants])
        filters: dict[str, tuple[GalleryFilter | None, np.ndarray | None]] = {
            "none": (None, None),
            "collection=web (80%)": (GalleryFilter(collections=("web",)), tenant_arr == ""),
            "tenant=t1 (5%)": (
                GalleryFilter(collections=("private-t1",), tenant="t1"),
                tenant_arr == "t1",
            ),
        }
        truth = {
            name: [exact_top(data, mask, q) for q in queries] for name, (_, mask) in filters.items()
        }
        # numpy brute force over the same vectors, for scale (no payload, no filter).
        numpy_lat = []
        for q in queries:
            t = time.perf_counter()
            exact_top(data, None, q)
            numpy_lat.append(time.perf_counter() - t)
        sweep = []
        for ef in args.ef:
            if isinstance(store, EdgeGalleryStore):
                store.exact = ef == "exact"
            if isinstance(store, (EdgeGalleryStore, QdrantGalleryStore)) and ef != "exact":
                store.hnsw_ef = int(ef)
            for name, (spec, _) in filters.items():
                latencies, recalls = [], []
                for q, expected in zip(queries, truth[name], strict=True):
                    t = time.perf_counter()
                    hits = await store.search(space, q.tolist(), limit=LIMIT, filter=spec)
                    latencies.append(time.perf_counter() - t)
                    got = {int(h.point.content_hash, 16) for h in hits}
                    recalls.append(len(got & expected) / max(1, len(expected)))
                sweep.append({
                    "ef": ef, "filter": name,
                    "p50_ms": round(pct(latencies, 50), 2), "p95_ms": round(pct(latencies, 95), 2),
                    "recall@50": round(statistics.mean(recalls), 4),
                })
        allocated, apparent = disk_mib(folder) if not args.url else (float("nan"), float("nan"))
        return {
            "points": n, "dim": dim, "queries": len(queries),
            "ingest_points_per_s": round(n / ingest_s),
            "index_build_s": round(build_s, 1), "optimized": optimized,
            "numpy_exact_p50_ms": round(pct(numpy_lat, 50), 2),
            "rss_growth_mib": round(rss_mib() - rss_before, 1),
            "optimize_child_max_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "disk_allocated_mib": round(allocated, 1), "disk_apparent_mib": round(apparent, 1),
            "sweep": sweep,
        }
    finally:
        await store.close()
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="10000,100000", help="comma-separated store sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="64,128,256,512,exact", help="hnsw_ef values to sweep ('exact': brute force)")
    parser.add_argument("--vectors", help=".npy of real embeddings (rows); the last --queries rows are the queries")
    parser.add_argument("--url", help="benchmark a Qdrant server through QdrantGalleryStore instead")
    parser.add_argument("--workdir", default=None, help="where the temporary store goes (default: the system temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()
    args.ef = [x if x == "exact" else int(x) for x in args.ef.split(",")]
    sizes = [int(x) for x in args.points.split(",")]
    if args.vectors:
        rows = np.load(args.vectors).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        pool, queries = rows[: -args.queries], rows[-args.queries :]
    else:
        rng = np.random.default_rng(0)
        pool = unit_rows(rng, max(sizes), args.dim)
        queries = unit_rows(rng, args.queries, args.dim)
    results = []
    for n in sizes:
        if n > len(pool):
            print(f"skipping {n}: only {len(pool)} vectors available")
            continue
        results.append(await run_size(args, pool[:n], queries))
        if not args.json:
            r = results[-1]
            print(f"\n== {r['points']} points, {r['dim']}-d, {r['queries']} queries, top-{LIMIT}")
            for key in ("ingest_points_per_s", "index_build_s", "numpy_exact_p50_ms", "rss_growth_mib",
                        "optimize_child_max_rss_mib", "disk_allocated_mib", "disk_apparent_mib"):
                print(f"  {key:28s} {r[key]}")
            print(f"  {'ef':>5} {'filter':22s} {'p50 ms':>8} {'p95 ms':>8} {'recall@50':>10}")
            for s in r["sweep"]:  # type: ignore[union-attr]
                print(f"  {s['ef']:>5} {s['filter']:22s} {s['p50_ms']:>8} {s['p95_ms']:>8} {s['recall@50']:>10}")
    meta = {"cpu": cpu_flags(), "python": platform.python_version(), "backend": args.url or "qdrant-edge-py"}
    if args.json:
        print(json.dumps({"machine": meta, "results": results}, indent=1))
    else:
        print(f"\nmachine: {meta}")


if __name__ == "__main__":
    asyncio.run(main())

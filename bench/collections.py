"""Private collections: import throughput, where an upload's time goes, and a collection search at 10,000 images.

Per precision (clip ONNX, full size, random weights; fp32 then int8), the three services
each in their own process as deployed: the embed server, the scraper on a catalog (a
``sources=gallery`` search never asks it) and the gateway with its gallery and blob
folders in a temp dir, API keys off (tenant ``local``). N near-duplicate benchmark
images, upscaled to 640x640 JPEG (a phone photo's order of size), are imported by
``python -m bulk_importer`` as a subprocess: images/s end to end.

Where the time goes, each stage of an upload measured alone in this process, on the
same images (the gateway has no per-stage timing for uploads): decode/check
(``images.prepare``, as the upload route does it), the embed call (Embed RPC with one
image per call, as one upload request embeds now, and with 8 per call), the blob put
(a local blob folder), and the store writes (``Gallery.remember`` of one point plus
the collection's record, one image at a time, in an embedded store of its own).

Then a collection search: the last precision's store is grown to ``--fill`` points by
seeded random unit vectors in the collection's vector space (collection and tenant
set, as uploads write them; no records: the collection's image count is not what is
measured), the gateway restarts on it and ``/search?collections=<name>&sources=gallery``
runs with images of the collection, each checked to come back first.

    .venv/bin/python -m bench.collections                       # about 10 minutes on 2 cores
    .venv/bin/python -m bench.collections --images 50 --precisions int8 --fill 2000   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.common import embed_server_process, free_port
from bench.gallery import gateway, pct
from bench.gallery_store import cpu_flags, unit_rows
from bench.quality.embedding import _embed_with_retries, describe_model
from bench.quality.near_duplicates import Sizes, generate
from bench.search_latency import _post_search, process
from search_gateway.collections.blobs.local import LocalBlobStore
from search_gateway.collections.records import CollectionRecords
from search_gateway.fetch.images import prepare
from search_gateway.gallery import Gallery, GalleryPoint, VectorSpace, open_store
from tattoo_search.v1 import embed_pb2_grpc

MODEL = "clip"
TENANT = "local"
SIDE = 640
# The gateway's defaults (GATEWAY_UPLOAD_MAX_PIXELS is far above; GATEWAY_EMBED_SHORT_SIDE).
MAX_PIXELS = 40_000_000
SHORT_SIDE = 448


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` distinct JPEGs of SIDE x SIDE from the near-duplicate generator (256 px, upscaled)."""
    sources = max(1, -(-n // 6))
    manifest = json.loads(generate(folder / "near-dup", Sizes(sources=sources, views=5, queries_per_source=1,
                                                              distractors=0)).read_text())
    out = folder / "import"
    out.mkdir()
    paths = []
    for i, entry in enumerate(manifest["files"][:n]):
        image = Image.open(folder / "near-dup" / entry["path"]).convert("RGB").resize((SIDE, SIDE),
                                                                                     Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        path = out / f"{i:05d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def run_import(base: str, folder: Path, collection: str, report: Path, concurrency: int) -> dict[str, object]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bulk_importer", str(folder), "--collection", collection,
                           "--gateway", base, "--create", "--no-progress", "--report", str(report),
                           "--concurrency", str(concurrency)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    statuses: dict[str, int] = {}
    for line in lines:
        statuses[line["status"]] = statuses.get(line["status"], 0) + 1
    if done.returncode != 0 or statuses.get("added", 0) != len(lines):
        raise RuntimeError(f"the import did not add every file: {statuses}\n{done.stdout}\n{done.stderr}")
    return {"images": len(lines), "seconds": round(seconds, 1), "images_per_s": round(len(lines) / seconds, 1)}


def embed_rate(stub: embed_pb2_grpc.EmbedServiceStub, blobs: list[bytes], per_call: int, in_flight: int) -> float:
    batches = [blobs[i: i + per_call] for i in range(0, len(blobs), per_call)]
    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(lambda b: _embed_with_retries(stub, MODEL, b, 120, "bench images"), batches))
    return len(blobs) / (time.perf_counter() - started)


async def store_stages(folder: Path, space: VectorSpace, data: list[bytes], prepared: list[str]) -> dict[str, float]:
    """Blob put and store writes, one image at a time as an upload does them: ms per image."""
    out: dict[str, float] = {}
    blobs = await LocalBlobStore.open(folder / "blobs")
    started = time.perf_counter()
    for sha, blob in zip(prepared, data, strict=True):
        await blobs.put(sha, blob, "image/jpeg")
        await blobs.exists(sha)
    out["blob_put_ms"] = (time.perf_counter() - started) * 1000 / len(data)
    store = await open_store(path=folder / "gallery", exact=True)
    try:
        gallery, recs = Gallery(store), CollectionRecords(store)
        rows = unit_rows(np.random.default_rng(1), len(prepared), space.dimension)
        points = [GalleryPoint(sha, tuple(row.tolist()), "stages", TENANT, platform="upload")
                  for sha, row in zip(prepared, rows, strict=True)]
        started = time.perf_counter()
        for point in points:
            await recs.image_by_hash(TENANT, "stages", point.content_hash)
        out["duplicate_check_ms"] = (time.perf_counter() - started) * 1000 / len(points)
        started = time.perf_counter()
        for point in points:
            await gallery.remember(space, [point])
        out["point_write_ms"] = (time.perf_counter() - started) * 1000 / len(points)
        started = time.perf_counter()
        for point in points:
            await recs.add_image(point)
        out["record_write_ms"] = (time.perf_counter() - started) * 1000 / len(points)
    finally:
        await store.close()
    return {key: round(value, 2) for key, value in out.items()}


async def fill(folder: Path, space: VectorSpace, collection: str, size: int) -> int:
    """Grows the gateway's store (closed meanwhile: the embedded store is single-process) to ``size``
    points of ``collection``; returns how many were added."""
    store = await open_store(path=folder, exact=True)
    try:
        rng = np.random.default_rng(0)
        added = 0
        for lo in range(0, size, 500):
            rows = unit_rows(rng, min(500, size - lo), space.dimension)
            await store.upsert(space, [GalleryPoint(f"{lo + i:064x}", tuple(row.tolist()), collection, TENANT,
                                                    platform="upload", title=f"filler {lo + i}")
                                       for i, row in enumerate(rows)])
            added += len(rows)
        return added
    finally:
        await store.close()


def collection_searches(base: str, collection: str, queries: list[tuple[bytes, str]], runs: int) -> dict[str, object]:
    url = f"{base}/search?sources=gallery&collections={collection}&max_results=50"
    _post_search(url, queries[-1][0])  # warm-up: connections, the store's first read
    times, timings = [], []
    for run in range(runs):
        blob, expect = queries[run % len(queries)]
        seconds, answer = _post_search(url, blob)
        times.append(seconds)
        timings.append(answer["timings"])
        best = answer["results"][0]
        if best["id"] != expect or best["score"] < 0.999:
            raise AssertionError(f"run {run}: the collection's own image did not come first: {best}")
    keys = sorted({key for t in timings for key in t})
    return {"runs": runs, "p50_ms": round(pct(times, 50), 1), "p95_ms": round(pct(times, 95), 1),
            "timings_p50_ms": {k: round(float(np.median([t.get(k, 0.0) for t in timings])), 1) for k in keys}}


async def run(args: argparse.Namespace) -> dict[str, object]:
    per_precision: list[dict[str, object]] = []
    report: dict[str, object] = {"machine": cpu_flags(), "images": args.images, "side": SIDE,
                                 "precisions": per_precision}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="collections-", dir=args.workdir)))
        paths = make_images(tmp, args.images)
        data = [p.read_bytes() for p in paths]
        report["mean_file_kib"] = round(sum(map(len, data)) / len(data) / 1024, 1)
        started = time.perf_counter()
        prepared = [prepare(d, max_pixels=MAX_PIXELS, short_side=SHORT_SIDE) for d in data]
        report["decode_check_ms"] = round((time.perf_counter() - started) * 1000 / len(data), 2)
        embed_bytes = [p.embed_bytes for p in prepared]
        catalog = tmp / "catalog.jsonl"
        catalog.write_text(json.dumps({"url": "https://example.com/a.jpg", "title": "unused"}) + "\n")
        scraper_port = free_port()
        stack.enter_context(process("scraper_service", {
            "SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": str(catalog), "SCRAPER_PORT": str(scraper_port)}))
        for precision in args.precisions.split(","):
            embed_env = {"EMBED_MODELS": MODEL, "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "full",
                         "EMBED_RUNTIME": "onnx", "EMBED_PRECISION": precision, "EMBED_DEVICE": "cpu"}
            figures: dict[str, object] = {"precision": precision}
            with embed_server_process(embed_env) as (target, _), grpc.insecure_channel(target) as channel:
                stub = embed_pb2_grpc.EmbedServiceStub(channel)
                identity = describe_model(stub, MODEL)
                space = VectorSpace(MODEL, identity.fingerprint, identity.global_dim)
                sample = embed_bytes[: args.embed_sample]
                figures["embed_per_call_1_in_flight_4_images_per_s"] = round(embed_rate(stub, sample, 1, 4), 1)
                figures["embed_per_call_8_in_flight_2_images_per_s"] = round(embed_rate(stub, sample, 8, 2), 1)
                work = tmp / precision
                gateway_env = {"GATEWAY_EMBED_TARGET": target, "GATEWAY_SCRAPER_TARGET": f"127.0.0.1:{scraper_port}",
                               "GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "GATEWAY_LOG_LEVEL": "warning",
                               # Fewer entries than query images: every search embeds its query.
                               "GATEWAY_CACHE_SIZE": "1",
                               "GATEWAY_GALLERY": "on", "GATEWAY_GALLERY_PATH": str(work / "gallery"),
                               "GATEWAY_BLOBS_PATH": str(work / "blobs")}
                collection = f"bench-{precision}"
                with gateway(gateway_env) as (base, _):
                    figures["import"] = run_import(base, tmp / "import", collection, work / "report.jsonl",
                                                   args.concurrency)
                print(json.dumps(figures), flush=True)
                figures["stages_ms_per_image"] = await store_stages(work / "stages", space, data,
                                                                    [p.sha256 for p in prepared])
                if precision == args.precisions.split(",")[-1]:
                    lines = [json.loads(line) for line in (work / "report.jsonl").read_text().splitlines()]
                    ids = {line["input"]: line["id"] for line in lines}
                    queries = [(paths[i].read_bytes(), ids[str(paths[i])]) for i in range(0, len(paths),
                                                                                           max(1, len(paths) // 8))]
                    filled = await fill(work / "gallery", space, collection, args.fill - len(paths))
                    figures["search_points_in_collection"] = filled + len(paths)
                    with gateway(gateway_env) as (base, _):
                        figures["search"] = collection_searches(base, collection, queries, args.runs)
            per_precision.append(figures)
            print(json.dumps(figures, indent=1), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="images imported per precision")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--concurrency", type=int, default=4, help="the importer's requests in flight (its default)")
    parser.add_argument("--embed-sample", type=int, default=96, help="images in each embed-alone measurement")
    parser.add_argument("--fill", type=int, default=10_000, help="points in the collection for the search")
    parser.add_argument("--runs", type=int, default=30, help="timed collection searches")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes (default: the system temp)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()

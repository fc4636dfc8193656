"""The bulk importer's memory against the size of the folder it imports (issue 13: "bounded
memory for a folder of 100,000 files").

What grows with a folder is what the importer walks, hashes, asks about and reports,
not what it uploads (a request holds at most ``--batch-files`` files, a few in flight),
so the measured run is the incremental one: a folder of N distinct small image files
(a JPEG signature and unique bytes, in folders of 1,000), all already in the collection.
The importer walks and hashes every file, asks the gateway which hashes the collection
holds (500 a request) and reports each file ``skipped``: every per-file path but the
upload itself, which ``bench.collections`` measures with real images.

The collection's records are written into the gateway's embedded store while it is
closed (the records an import would have left, one per file), then a real gateway
(tiny random embed models: nothing is embedded here) answers the importer. The importer
runs as a subprocess that prints its own RSS once its modules are imported and its peak
RSS (``VmHWM``) when it ends.

    .venv/bin/python -m bench.importer_memory                      # 1,000 / 10,000 / 100,000 files
    .venv/bin/python -m bench.importer_memory --files 1000,5000    # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.common import embed_server_process, free_port
from bench.gallery import gateway
from bench.gallery_store import cpu_flags
from bench.search_latency import process
from search_gateway.collections.records import META, CollectionRecords
from search_gateway.gallery import GalleryPoint, open_store

TENANT = "local"  # API keys off: the one tenant of a local install
COLLECTION = "bench-import"
PER_FOLDER = 1000
# The importer's main, run so that it reports its own peak RSS (VmHWM, KiB) on the way out,
# and its RSS once imported, before any file. Not ru_maxrss: Linux keeps that across exec,
# so a child would report the bench's own peak.
_MEASURED = (
    "import runpy, sys\n"
    "def hwm():\n"
    "    return next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "import bulk_importer.__main__\n"
    "print('imported_rss_kib', hwm(), file=sys.stderr)\n"
    "sys.argv = ['bulk_importer', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('bulk_importer', run_name='__main__')\n"
    "finally:\n"
    "    print('peak_rss_kib', hwm(), file=sys.stderr)\n"
)


def make_files(folder: Path, n: int) -> list[str]:
    """``n`` distinct files that pass the importer's format check; their SHA-256 hashes."""
    hashes = []
    for i in range(n):
        sub = folder / f"{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        data = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "big") * 16
        (sub / f"{i:06d}.jpg").write_bytes(data)
        hashes.append(hashlib.sha256(data).hexdigest())
    return hashes


async def hold(store_path: Path, hashes: list[str]) -> None:
    """The collection and a record per file, as a finished import leaves them (written 1,000
    a call: the gateway writes one per upload)."""
    store = await open_store(path=store_path)
    try:
        await CollectionRecords(store).create(TENANT, COLLECTION)
        for lo in range(0, len(hashes), 1000):
            await store.upsert(META, [GalleryPoint(h, (1.0,), COLLECTION, TENANT, title=h[:12])
                                      for h in hashes[lo: lo + 1000]])
    finally:
        await store.close()


def run_importer(base: str, folder: Path, report: Path) -> dict[str, object]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, str(folder), "--collection", COLLECTION,
                           "--gateway", base, "--no-progress", "--report", str(report)],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    measured = {line.split()[0]: int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith(("peak_rss_kib", "imported_rss_kib"))}
    peak, imported = measured.get("peak_rss_kib"), measured.get("imported_rss_kib", 0)
    statuses: dict[str, int] = {}
    with report.open() as lines:
        for line in lines:
            status = json.loads(line)["status"]
            statuses[status] = statuses.get(status, 0) + 1
    if done.returncode != 0 or peak is None:
        raise RuntimeError(f"the importer failed ({done.returncode}): {statuses}\n{done.stderr[-2000:]}")
    return {"statuses": statuses, "seconds": round(seconds, 1), "files_per_s": round(sum(statuses.values()) / seconds),
            "rss_once_imported_mib": round(imported / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
            "report_mib": round(report.stat().st_size / 2**20, 1)}


async def run(args: argparse.Namespace) -> dict[str, object]:
    sizes = [int(n) for n in args.files.split(",")]
    results: list[dict[str, object]] = []
    out: dict[str, object] = {"machine": cpu_flags(), "runs": results}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="importer-mem-", dir=args.workdir)))
        catalog = tmp / "catalog.jsonl"
        catalog.write_text(json.dumps({"url": "https://example.com/a.jpg", "title": "unused"}) + "\n")
        scraper_port = free_port()
        stack.enter_context(process("scraper_service", {
            "SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": str(catalog), "SCRAPER_PORT": str(scraper_port)}))
        target, _ = stack.enter_context(embed_server_process({
            "EMBED_MODELS": "clip", "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "tiny",
            "EMBED_RUNTIME": "torch", "EMBED_DEVICE": "cpu"}))
        for n in sizes:
            work = tmp / f"n{n}"
            started = time.perf_counter()
            hashes = make_files(work / "files", n)
            await hold(work / "gallery", hashes)
            prepared_s = time.perf_counter() - started
            env = {"GATEWAY_EMBED_TARGET": target, "GATEWAY_SCRAPER_TARGET": f"127.0.0.1:{scraper_port}",
                   "GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_GALLERY": "on",
                   "GATEWAY_GALLERY_PATH": str(work / "gallery"), "GATEWAY_BLOBS_PATH": str(work / "blobs")}
            with gateway(env) as (base, _):
                figures = run_importer(base, work / "files", work / "report.jsonl")
            if figures["statuses"] != {"skipped": n}:
                raise AssertionError(f"every file should be skipped as held: {figures['statuses']}")
            results.append({"files": n, "setup_s": round(prepared_s, 1), **figures})
            print(json.dumps(results[-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="1000,10000,100000", help="folder sizes, comma-separated")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes (default: the system temp)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()

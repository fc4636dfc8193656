"""Deleting a collection of N images: how long the caller waits, before and after the
deletion moved to the background (search_gateway/collections/deletion.py).

Before, ``DELETE /collections/{name}`` emptied the collection inside the request: page by
page, each image's points, its record, then its original one at a time (is it referenced
anywhere, its age, the delete). After, the request deletes the collection's points with
one filtered delete per model space and marks it deleting (the caller waits for that
only), and the background empties it, releasing originals 16 at a time.

Both paths run in this process on the gateway's own code and stores: the embedded
gallery store (one 512-d model space, as clip) and a blob store, either a local folder
or an S3 bucket on a moto server on loopback (each blob call an HTTP round trip, as
against a real bucket, but with loopback's latency: a real bucket's is higher, so the
gap only grows). Each path gets a fresh copy of the same collection.

    .venv/bin/python -m bench.collection_delete                 # 2,000 images, folder and moto S3
    .venv/bin/python -m bench.collection_delete --images 500 --blobs local
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from bench.gallery_store import cpu_flags
from search_gateway.collections.blobs.base import BlobStore
from search_gateway.collections.blobs.factory import open_blob_store
from search_gateway.collections.blobs.gc import release
from search_gateway.collections.deletion import CollectionDeleter
from search_gateway.collections.records import META, CollectionRecords
from search_gateway.gallery import GalleryPoint, VectorSpace, open_store
from search_gateway.gallery.link import GalleryLink

TENANT, NAME = "bench", "archive"
SPACE = VectorSpace("clip", "bench-delete", 512)


async def fill(recs: CollectionRecords, blobs: BlobStore, n: int, salt: str) -> None:
    """A collection of ``n`` images as uploads leave it: original, point, record."""
    collection = await recs.create(TENANT, NAME)
    if collection is None:
        raise RuntimeError(f"the bench's collection {NAME!r} exists already in this store")
    await recs.touch(collection, [SPACE.model])
    rng = np.random.default_rng(0)
    for lo in range(0, n, 250):
        points = []
        for i in range(lo, min(n, lo + 250)):
            data = f"{salt}-{i}".encode() * 64
            sha256 = hashlib.sha256(data).hexdigest()
            await blobs.put(sha256, data, "image/jpeg")
            v = rng.standard_normal(SPACE.dimension)
            points.append(GalleryPoint(sha256, tuple((v / np.linalg.norm(v)).tolist()), NAME, TENANT,
                                       engine=SPACE.model, title=f"{i}.jpg"))
        await recs.store.upsert(SPACE, points)
        await recs.store.upsert(META, [GalleryPoint(p.content_hash, (1.0,), NAME, TENANT, engine=SPACE.model,
                                                    title=p.title) for p in points])


async def before(recs: CollectionRecords, blobs: BlobStore) -> float:
    """The old route: everything inside the request, originals released one at a time."""
    started = time.perf_counter()
    while images := (await recs.images(TENANT, NAME)).points:
        await recs.store.delete(SPACE, [p.id for p in images])
        await recs.remove_images(images)
        for image in images:
            await release(blobs, image.content_hash, recs.referenced)
    await recs.forget(TENANT, NAME)
    return time.perf_counter() - started


async def after(recs: CollectionRecords, blobs: BlobStore, link: GalleryLink) -> tuple[float, float]:
    """The request's share (points, mark), then the background's."""

    async def space_for(model: str) -> VectorSpace | None:
        return SPACE if model == SPACE.model else None

    # No release grace: the bench's originals were written a moment ago, and releasing them is what is timed.
    deleter = CollectionDeleter(link, blobs, space_for, release_grace_s=0)
    collection = await recs.get(TENANT, NAME)
    assert collection is not None
    started = time.perf_counter()
    await deleter.delete(collection)
    answered = time.perf_counter() - started
    await deleter.settled()
    emptied = time.perf_counter() - started
    assert await recs.find(TENANT, NAME) is None and await recs.count(TENANT, NAME) == 0
    return answered, emptied


async def one_kind(kind: str, n: int, tmp: Path, blob_url: str | None) -> dict[str, object]:
    figures: dict[str, object] = {"blobs": kind, "images": n}
    for path, salt in (("before", "b"), ("after", "a")):
        store = await open_store(path=tmp / kind / path / "gallery")
        blobs = await (open_blob_store(url=blob_url, bucket="bench", prefix=f"{path}/") if blob_url
                       else open_blob_store(path=tmp / kind / path / "blobs"))
        try:
            recs = CollectionRecords(store)
            await fill(recs, blobs, n, salt)
            assert await recs.count(TENANT, NAME) == n
            if path == "before":
                seconds = await before(recs, blobs)
                figures["before_request_s"] = round(seconds, 2)
            else:
                link = GalleryLink(_opened(store), "bench", retry_s=1.0)
                await link.start()
                answered, emptied = await after(recs, blobs, link)
                figures["after_request_ms"] = round(answered * 1000, 1)
                figures["after_background_s"] = round(emptied, 2)
        finally:
            await blobs.close()
            await store.close()
    return figures


def _opened(store: object) -> Callable[[], Awaitable[object]]:
    async def opener() -> object:
        return store

    return opener


async def run(args: argparse.Namespace) -> dict[str, object]:
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="collection-delete-") as tmp:
        for kind in args.blobs.split(","):
            if kind == "local":
                results.append(await one_kind(kind, args.images, Path(tmp), None))
            else:
                from moto.server import ThreadedMotoServer

                logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

                os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                try:
                    host, port = server.get_host_and_port()
                    url = f"http://{host}:{port}"
                    import boto3

                    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="bench")
                    results.append(await one_kind(kind, args.images, Path(tmp), url))
                finally:
                    server.stop()
            print(json.dumps(results[-1]), flush=True)
    return {"machine": cpu_flags(), "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--blobs", default="local,moto-s3", help="local, moto-s3 or both (comma-separated)")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=1))


if __name__ == "__main__":
    main()

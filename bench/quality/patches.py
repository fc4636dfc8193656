"""Patch tokens of benchmark images through the embed server's `EmbedPatches`, cached on disk.

Keyed as the global vectors are (`embedding.VectorCache`: model, weights fingerprint,
runtime, precision; image SHA-256 plus crop box), in a `patches/` folder next to
`vectors.npz`, one `<sha256>.npy` per image (no pickles): a run of two-stage search
needs only the queries and their top K, and a new image adds one small file instead
of rewriting every patch of the benchmark (DINOv2: 256 x 768 floats an image).

`EmbedPatches` takes one image a call; calls run concurrently so that the server's
dynamic batcher can merge them into batches, as it does for concurrent searches.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality.embedding import (
    EmbeddingError,
    ModelIdentity,
    check_provenance,
    image_key,
    with_retries,
)
from bench.quality.layouts import ImageRef
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc


class PatchCache:
    """`<directory>/<model>/<cache key>/patches/<sha256>.npy`, float32 (patches x dimension)."""

    def __init__(self, directory: Path, identity: ModelIdentity) -> None:
        self.folder = directory / identity.model / identity.cache_key / "patches"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"a patch cache key is a hex SHA-256, got {key!r}")
        return self.folder / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            patches = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            print(f"quality: ignoring unreadable cached patches {path}: {exc}", file=sys.stderr)
            return None
        return patches if patches.ndim == 2 and patches.dtype == np.float32 else None

    def put(self, key: str, patches: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".{key}.{os.getpid()}.npy"
        np.save(temporary, np.ascontiguousarray(patches, dtype=np.float32), allow_pickle=False)
        os.replace(temporary, self._path(key))  # a reader never sees half a file


@dataclass
class PatchStats:
    images: int = 0  # distinct images (by key)
    from_cache: int = 0
    fetched: int = 0
    seconds: float = 0.0


def fetch_one(stub: embed_pb2_grpc.EmbedServiceStub, identity: ModelIdentity, data: bytes, what: str,
              timeout: float) -> np.ndarray:
    """One image's patch tokens (patches x dimension), provenance checked."""
    request = embed_pb2.EmbedPatchesRequest(model=identity.model, image=data)
    response = with_retries(lambda: stub.EmbedPatches(request, timeout=timeout), f"EmbedPatches failed for {what}")
    check_provenance(identity, response.provenance)
    patches = to_numpy(response.patches)
    if patches.ndim != 2 or patches.shape[0] != response.grid_height * response.grid_width or patches.shape[0] == 0:
        raise EmbeddingError(f"EmbedPatches returned shape {patches.shape} for a {response.grid_height} x "
                             f"{response.grid_width} grid ({what})")
    return patches.astype(np.float32, copy=True)


def fetch_patches(
    stub: embed_pb2_grpc.EmbedServiceStub,
    identity: ModelIdentity,
    refs: Sequence[ImageRef],
    cache: PatchCache | None,
    *,
    concurrency: int = 8,
    timeout: float = 120,
) -> tuple[dict[str, np.ndarray], PatchStats]:
    """Patch tokens by image key for every ref; what the cache holds is not fetched again."""
    started = time.perf_counter()
    by_key: dict[str, ImageRef] = {}
    for ref in refs:
        by_key.setdefault(image_key(ref)[0], ref)
    patches: dict[str, np.ndarray] = {}
    if cache is not None:
        for key in by_key:
            cached = cache.get(key)
            if cached is not None:
                patches[key] = cached
    stats = PatchStats(images=len(by_key), from_cache=len(patches))
    missing = [(key, ref) for key, ref in by_key.items() if key not in patches]

    def run(item: tuple[str, ImageRef]) -> tuple[str, np.ndarray]:
        key, ref = item
        return key, fetch_one(stub, identity, image_key(ref)[1], str(ref.path), timeout)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for key, fetched in pool.map(run, missing):
            patches[key] = fetched
            if cache is not None:
                cache.put(key, fetched)
            stats.fetched += 1
            if len(missing) >= 200 and stats.fetched % 200 == 0:
                print(f"quality: patches of {stats.fetched}/{len(missing)} image(s) fetched", file=sys.stderr)
    stats.seconds = time.perf_counter() - started
    return patches, stats

"""Embedding benchmark images through the embed server's gRPC API, with a disk cache.

The gallery is embedded once per model: vectors are cached on disk under a key made
of the model name and its weights fingerprint, one row per image SHA-256 (of the
file's bytes, plus the crop box for cropped queries). `ListModels` is expected to
gain a `weights_fingerprint` field; until a server sends it, the key falls back to
weights source + runtime + precision + architecture + device, which cannot tell two
random seeds or two pretrained checkpoints of one architecture apart: the run says
so, and `--no-cache` (or another `--cache-dir`) avoids stale vectors.

Each response's provenance is checked against what `ListModels` said, so that a
replica serving other weights behind a load balancer cannot poison the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from bench.quality.layouts import ImageRef
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


class EmbeddingError(RuntimeError):
    """The server could not embed the benchmark; the message says which image or why."""


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    model: str
    global_dim: int
    weights: str  # WEIGHTS_SOURCE_PRETRAINED or WEIGHTS_SOURCE_RANDOM
    runtime: str
    precision: str
    device: str
    architecture: str
    fingerprint: str
    fingerprint_source: str  # "server" or "fallback"

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(f"{self.model}\n{self.fingerprint}".encode()).hexdigest()[:24]


def describe_model(stub: embed_pb2_grpc.EmbedServiceStub, model: str, timeout: float = 30) -> ModelIdentity:
    try:
        response = stub.ListModels(embed_pb2.ListModelsRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        raise EmbeddingError(f"ListModels failed: {exc.code().name}: {exc.details()}") from exc
    served = {info.name: info for info in response.models}
    if model not in served:
        raise EmbeddingError(f"the server does not serve {model!r}; it serves {', '.join(sorted(served)) or 'nothing'}")
    info = served[model]
    if info.state == embed_pb2.MODEL_STATE_FAILED:
        raise EmbeddingError(f"model {model} failed to load on the server: {info.error}")
    weights = embed_pb2.WeightsSource.Name(info.weights)
    # Read the field by name so this runs against servers from before and after it exists.
    server_fingerprint = getattr(info, "weights_fingerprint", "") if "weights_fingerprint" in info.DESCRIPTOR.fields_by_name else ""
    if server_fingerprint:
        fingerprint, source = str(server_fingerprint), "server"
    else:
        fingerprint = "|".join((weights, info.runtime, info.precision, info.architecture, info.device))
        source = "fallback"
    return ModelIdentity(model, int(info.global_dim), weights, info.runtime, info.precision, info.device,
                         info.architecture, fingerprint, source)


def image_key(ref: ImageRef) -> tuple[str, bytes]:
    """(cache key, bytes to send): SHA-256 of the file, the crop box appended for crops."""
    data = ref.path.read_bytes()
    digest = hashlib.sha256(data)
    if ref.box is None:
        return digest.hexdigest(), data
    digest.update(("#box=" + ",".join(repr(v) for v in ref.box)).encode())
    with Image.open(io.BytesIO(data)) as image:
        cropped = image.convert("RGB").crop(ref.box)  # Pillow rounds the box, as revisitop's loader does
    out = io.BytesIO()
    cropped.save(out, format="PNG")  # lossless: the crop is what the model sees
    return digest.hexdigest(), out.getvalue()


class VectorCache:
    """One `.npz` per (model, fingerprint): hex SHA-256 keys and float32 rows. No pickles."""

    def __init__(self, directory: Path, identity: ModelIdentity) -> None:
        self.folder = directory / identity.model / identity.cache_key
        self.path = self.folder / "vectors.npz"
        self._identity = identity
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as stored:
                    keys, rows = stored["keys"], stored["vectors"]
            except (OSError, ValueError, KeyError) as exc:
                print(f"quality: ignoring unreadable cache {self.path}: {exc}", file=sys.stderr)
            else:
                if rows.ndim == 2 and rows.shape[1] == identity.global_dim and len(keys) == len(rows):
                    self.vectors = {str(k): row for k, row in zip(keys, rows)}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.vectors), dtype="U64")
        rows = np.stack(list(self.vectors.values())) if self.vectors else np.zeros((0, self._identity.global_dim), "f4")
        temporary = self.folder / f".vectors.{os.getpid()}.npz"
        np.savez(temporary, keys=keys, vectors=rows.astype(np.float32))
        os.replace(temporary, self.path)
        (self.folder / "identity.json").write_text(json.dumps(asdict(self._identity), indent=2) + "\n")


@dataclass
class EmbedStats:
    images: int = 0  # distinct images (by key)
    from_cache: int = 0
    embedded: int = 0
    seconds: float = 0.0


def embed_images(
    stub: embed_pb2_grpc.EmbedServiceStub,
    identity: ModelIdentity,
    refs: Sequence[ImageRef],
    cache: VectorCache | None,
    *,
    batch_size: int = 16,
    concurrency: int = 4,
    timeout: float = 120,
    save_every: int = 2048,
) -> tuple[np.ndarray, EmbedStats]:
    """One vector per ref, in order; what the cache holds is not sent again."""
    started = time.perf_counter()
    keys = [image_key(ref)[0] for ref in refs]
    known = cache.vectors if cache is not None else {}
    vectors: dict[str, np.ndarray] = {k: known[k] for k in keys if k in known}
    missing: dict[str, ImageRef] = {}
    for key, ref in zip(keys, refs):
        if key not in vectors:
            missing.setdefault(key, ref)
    stats = EmbedStats(images=len(set(keys)), from_cache=len(vectors))
    batches = [list(missing.items())[i : i + batch_size] for i in range(0, len(missing), batch_size)]

    def run(batch: list[tuple[str, ImageRef]]) -> list[tuple[str, np.ndarray]]:
        payload = [image_key(ref)[1] for _, ref in batch]
        rows = _embed_with_retries(stub, identity, payload, [ref for _, ref in batch], timeout)
        return [(key, row) for (key, _), row in zip(batch, rows)]

    unsaved = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for done in pool.map(run, batches):
            for key, row in done:
                vectors[key] = row
                if cache is not None:
                    cache.vectors[key] = row
            stats.embedded += len(done)
            unsaved += len(done)
            if cache is not None and unsaved >= save_every:
                cache.save()
                unsaved = 0
            if len(missing) >= 500 and stats.embedded % (batch_size * 25) < batch_size:
                print(f"quality: embedded {stats.embedded}/{len(missing)}", file=sys.stderr)
    if cache is not None and unsaved:
        cache.save()
    stats.seconds = time.perf_counter() - started
    return np.stack([vectors[k] for k in keys]).astype(np.float32), stats


def _embed_with_retries(
    stub: embed_pb2_grpc.EmbedServiceStub, identity: ModelIdentity, images: list[bytes], refs: list[ImageRef], timeout: float
) -> np.ndarray:
    delay = 0.2
    for attempt in range(6):
        try:
            response = stub.Embed(embed_pb2.EmbedRequest(model=identity.model, images=images), timeout=timeout)
            break
        except grpc.RpcError as exc:
            if exc.code() in RETRYABLE and attempt < 5:
                time.sleep(delay)
                delay *= 2
                continue
            raise EmbeddingError(f"Embed failed for a batch starting with {refs[0].path}: "
                                 f"{exc.code().name}: {exc.details()}") from exc
    _check_provenance(identity, response.provenance)
    rows = to_numpy(response.embeddings)
    if rows.shape != (len(images), identity.global_dim):
        raise EmbeddingError(f"Embed returned shape {rows.shape} for {len(images)} images of dim {identity.global_dim}")
    return rows.copy()


def _check_provenance(identity: ModelIdentity, provenance: embed_pb2.Provenance) -> None:
    seen = (provenance.model, embed_pb2.WeightsSource.Name(provenance.weights), provenance.runtime, provenance.precision)
    expected = (identity.model, identity.weights, identity.runtime, identity.precision)
    if seen != expected:
        raise EmbeddingError(f"a response came from {seen}, but ListModels described {expected}: "
                             "replicas serve different models; vectors would mix")

"""Embedding benchmark images through the embed server's gRPC API, with a disk cache.

The gallery is embedded once per model: vectors are cached on disk under a key made
of the model name, its weights fingerprint, runtime and precision (int8 vectors of
the same weights are not fp32 ones), one row per image SHA-256 (of the file's bytes,
plus the crop box for cropped queries). The fingerprint is `ListModels`'
`weights_fingerprint`, sent once the model has loaded (a lazily loaded model is made
to load first). A server without the field gets a fallback key, weights source +
runtime + precision + architecture + device, which cannot tell two random seeds or
two pretrained checkpoints of one architecture apart: the run says so, and
`--no-cache` (or another `--cache-dir`) avoids stale vectors.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
from PIL import Image

from bench.quality.layouts import ImageRef
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
T = TypeVar("T")


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()


_WARM_UP = _png(32, 32)  # makes a lazily loaded model load, so that it reports its fingerprint


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
        # The fingerprint names the weights, not how they run: int8 or fp16 vectors of the
        # same weights differ from fp32 ones, so runtime and precision are part of the key.
        key = "\n".join((self.model, self.fingerprint, self.runtime, self.precision))
        return hashlib.sha256(key.encode()).hexdigest()[:24]


def _list_model(stub: embed_pb2_grpc.EmbedServiceStub, model: str, timeout: float) -> embed_pb2.ModelInfo:
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
    return info


def _fingerprint_of(message: embed_pb2.ModelInfo | embed_pb2.Provenance) -> str:
    # By name, so this runs against servers (and generated code) from before the field existed.
    return str(getattr(message, "weights_fingerprint", "")) if "weights_fingerprint" in message.DESCRIPTOR.fields_by_name else ""


def describe_model(stub: embed_pb2_grpc.EmbedServiceStub, model: str, timeout: float = 300) -> ModelIdentity:
    """What serves `model`; waits (up to `timeout`) for it to load, as its fingerprint comes only then."""
    info = _list_model(stub, model, 30)
    if "weights_fingerprint" in info.DESCRIPTOR.fields_by_name and info.state != embed_pb2.MODEL_STATE_READY:
        if info.state == embed_pb2.MODEL_STATE_NOT_LOADED:  # loads on first use (EMBED_PRELOAD=false)
            _embed_with_retries(stub, model, [_WARM_UP], timeout)
        deadline = time.monotonic() + timeout
        while info.state != embed_pb2.MODEL_STATE_READY and time.monotonic() < deadline:
            time.sleep(0.5)
            info = _list_model(stub, model, 30)
    weights = embed_pb2.WeightsSource.Name(info.weights)
    server_fingerprint = _fingerprint_of(info)
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
                    self.vectors = {str(k): row for k, row in zip(keys, rows, strict=True)}

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
    for key, ref in zip(keys, refs, strict=True):
        if key not in vectors:
            missing.setdefault(key, ref)
    stats = EmbedStats(images=len(set(keys)), from_cache=len(vectors))
    batches = [list(missing.items())[i : i + batch_size] for i in range(0, len(missing), batch_size)]

    def run(batch: list[tuple[str, ImageRef]]) -> list[tuple[str, np.ndarray]]:
        payload = [image_key(ref)[1] for _, ref in batch]
        rows = _embed_batch(stub, identity, payload, [ref for _, ref in batch], timeout)
        return [(key, row) for (key, _), row in zip(batch, rows, strict=True)]

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


def with_retries(call: Callable[[], T], what: str) -> T:
    """`call()`, tried again with doubling back-off while the server says retry; else EmbeddingError naming `what`."""
    delay = 0.2
    for attempt in range(6):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() in RETRYABLE and attempt < 5:  # queue full or replica gone: back off, try again
                time.sleep(delay)
                delay *= 2
                continue
            raise EmbeddingError(f"{what}: {exc.code().name}: {exc.details()}") from exc
    raise AssertionError("unreachable")


def _embed_with_retries(
    stub: embed_pb2_grpc.EmbedServiceStub, model: str, images: list[bytes], timeout: float, what: str = "a warm-up image"
) -> embed_pb2.EmbedResponse:
    request = embed_pb2.EmbedRequest(model=model, images=images)
    return with_retries(lambda: stub.Embed(request, timeout=timeout), f"Embed failed for {what}")


def _embed_batch(
    stub: embed_pb2_grpc.EmbedServiceStub, identity: ModelIdentity, images: list[bytes], refs: list[ImageRef], timeout: float
) -> np.ndarray:
    names = ", ".join(str(ref.path) for ref in refs[:4]) + (", ..." if len(refs) > 4 else "")
    response = _embed_with_retries(stub, identity.model, images, timeout, f"the batch of {names}")
    check_provenance(identity, response.provenance)
    rows = to_numpy(response.embeddings)
    if rows.shape != (len(images), identity.global_dim):
        raise EmbeddingError(f"Embed returned shape {rows.shape} for {len(images)} images of dim {identity.global_dim}")
    return rows.copy()


def check_provenance(identity: ModelIdentity, provenance: embed_pb2.Provenance) -> None:
    seen = (provenance.model, embed_pb2.WeightsSource.Name(provenance.weights), provenance.runtime, provenance.precision)
    expected = (identity.model, identity.weights, identity.runtime, identity.precision)
    if identity.fingerprint_source == "server" and _fingerprint_of(provenance):
        seen, expected = (*seen, _fingerprint_of(provenance)), (*expected, identity.fingerprint)
    if seen != expected:
        raise EmbeddingError(f"a response came from {seen}, but ListModels described {expected}: "
                             "replicas serve different models; vectors would mix")

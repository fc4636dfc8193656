"""Random weights come from the seed alone, and a wrong export never reaches the cache.

Issue 10: an ONNX server loading several models at once into an empty cache once
served SigLIP vectors unrelated (cosine -0.002) to a torch server's for the same seed:
the weights were drawn from torch's global generator, which another thread used at
the same time, and the export was then cached under a name that said "seed 0".
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from embed_server.config import MODEL_NAMES
from embed_server.models import family
from embed_server.models.seeded import build_random
from embed_server.models.weights import fingerprint_towers
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg


@contextmanager
def _global_generator_in_use() -> Iterator[None]:
    """Another thread drawing from torch's global generator all along, as any torch
    code in the process may (the dynamo exporter saves and restores its state)."""
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            torch.rand(8)

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def _served(env: dict[str, str], image: bytes) -> dict[str, tuple[embed_pb2.ModelInfo, np.ndarray, embed_pb2.Provenance]]:
    """Each model's ListModels entry, its vector for `image` and that answer's provenance."""
    with embed_server(**env) as server, grpc.insecure_channel(server.target) as channel:
        wait_for_health(channel, timeout=300)
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        served = {}
        for info in stub.ListModels(embed_pb2.ListModelsRequest()).models:
            response = stub.Embed(embed_pb2.EmbedRequest(model=info.name, images=[image]), timeout=60)
            served[info.name] = (info, to_numpy(response.embeddings)[0], response.provenance)
        return served


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_build_never_touches_torchs_global_generator(name: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = fingerprint_towers(build_random(name, "tiny", 0))
    assert torch.equal(torch.get_rng_state(), before), "building drew from torch's global generator"
    torch.manual_seed(4321)  # whatever state the global generator is in, the seed decides
    assert fingerprint_towers(build_random(name, "tiny", 0)) == first
    assert fingerprint_towers(build_random(name, "tiny", 1)) != first


# Slow: builds every model twice and exports each to ONNX.
@pytest.mark.slow
def test_weights_built_alone_equal_weights_built_while_all_load_and_export(tmp_path: Path) -> None:
    image = jpeg(5)
    alone = {}
    for name in MODEL_NAMES:
        alone.update(_served({"EMBED_MODELS": name, "EMBED_RUNTIME": "torch", "EMBED_SEED": "3"}, image))

    env = {"EMBED_MODELS": ",".join(MODEL_NAMES), "EMBED_RUNTIME": "onnx", "EMBED_SEED": "3",
           "EMBED_ONNX_CACHE_DIR": str(tmp_path / "empty")}
    with _global_generator_in_use():
        together = _served(env, image)

    for name in MODEL_NAMES:
        (info_alone, vector_alone, _), (info, vector, provenance) = alone[name], together[name]
        assert info.runtime == "onnx" and not info.exports_from_cache and not info.runtime_fallback, name
        assert _cosine(vector, vector_alone) >= 0.9999, f"{name}: other weights than when built alone"
        assert info.weights_fingerprint.startswith("sha256:"), name
        assert info.weights_fingerprint == info_alone.weights_fingerprint, name
        assert provenance.weights_fingerprint == info.weights_fingerprint, name
    assert len({together[name][0].weights_fingerprint for name in MODEL_NAMES}) == len(MODEL_NAMES)


# Slow: an ONNX export and its int8 quantisation.
@pytest.mark.slow
def test_a_fresh_export_that_disagrees_with_torch_is_not_cached_and_torch_serves(tmp_path: Path) -> None:
    """The cache holds an intact fp32 file made from other weights (the incident's kind
    of file); the int8 file derived from it is fresh, fails its check against the torch
    model, stays out of the cache, and the model serves with torch, saying why."""
    name, image = "dinov2", jpeg(9)
    cache, other = tmp_path / "cache", tmp_path / "other"
    base = {"EMBED_MODELS": name, "EMBED_RUNTIME": "onnx", "EMBED_SEED": "0"}
    right_info, right_vector, _ = _served({**base, "EMBED_ONNX_CACHE_DIR": str(cache)}, image)[name]
    wrong_info, _, _ = _served({**base, "EMBED_ONNX_CACHE_DIR": str(other), "EMBED_SEED": "1"}, image)[name]
    assert right_info.weights_fingerprint != wrong_info.weights_fingerprint

    # Seed 1's fp32 export, with its (valid) sidecar, under seed 0's name.
    for suffix in (".onnx", ".json"):
        (wrong,) = other.glob(f"{name}-*-image-fp32-*{suffix}")
        (right,) = cache.glob(f"{name}-*-image-fp32-*{suffix}")
        shutil.copyfile(wrong, right)

    served = _served({**base, "EMBED_ONNX_CACHE_DIR": str(cache), "EMBED_PRECISION": "int8"}, image)
    info, vector, provenance = served[name]
    assert info.state == embed_pb2.MODEL_STATE_READY
    assert info.runtime == "torch" and provenance.runtime == "torch"
    assert "int8 ONNX export does not match the torch model" in info.runtime_fallback
    assert "serving with torch instead" in info.runtime_fallback
    assert info.weights_fingerprint == right_info.weights_fingerprint == provenance.weights_fingerprint
    assert _cosine(vector, right_vector) >= 0.9999
    assert not list(cache.glob(f"{name}-*-int8-*")), "the failed export was cached"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"


# Slow: builds and saves every model's checkpoint to fingerprint it.
@pytest.mark.slow
def test_pretrained_weights_are_fingerprinted_by_their_tensors(tmp_path: Path) -> None:
    """The same checkpoint served by torch and by ONNX Runtime reports one fingerprint,
    the hash of the tensors it holds; a second ONNX start knows it without torch."""
    from tests.support.checkpoints import write_tiny_checkpoint

    write_tiny_checkpoint("dinov3", tmp_path / "weights")
    env = {"EMBED_WEIGHTS": "pretrained", "EMBED_ARCHITECTURE": "full", "EMBED_MODELS": "dinov3",
           "EMBED_WEIGHTS_DIR": str(tmp_path / "weights"), "EMBED_ONNX_CACHE_DIR": str(tmp_path / "cache")}
    by_torch = _served({**env, "EMBED_RUNTIME": "torch"}, jpeg(2))["dinov3"][0]
    exported = _served({**env, "EMBED_RUNTIME": "onnx"}, jpeg(2))["dinov3"][0]
    cached = _served({**env, "EMBED_RUNTIME": "onnx"}, jpeg(2))["dinov3"][0]
    assert by_torch.weights_fingerprint.startswith("sha256:")
    assert by_torch.weights_fingerprint == exported.weights_fingerprint == cached.weights_fingerprint
    assert not exported.exports_from_cache and cached.exports_from_cache
    loaded_here = family("dinov3").load_pretrained(tmp_path / "weights" / "dinov3")
    assert fingerprint_towers(loaded_here) == by_torch.weights_fingerprint

"""ONNX Runtime against torch on the same towers, and the export cache."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from embed_server.config import MODEL_NAMES
from embed_server.images import decode_image
from embed_server.models import CARDS
from embed_server.models.seeded import build_random
from embed_server.models.tokenizers import load_tokenizer
from embed_server.runtimes import int8_modes
from embed_server.runtimes.base import ModelWeights
from embed_server.runtimes.onnx_export import ExportCache
from embed_server.runtimes.onnx_runtime import OnnxRuntime
from embed_server.runtimes.torch_runtime import TorchRuntime
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg

GALLERY = 16


def _pixels(name: str, seeds: range) -> np.ndarray:
    card = CARDS[name]
    return np.stack([card.preprocess(decode_image(jpeg(seed), 10**8)) for seed in seeds])


def _runtimes(name: str, tmp_path: Path, precision: str) -> tuple[TorchRuntime, OnnxRuntime]:
    towers = build_random(name, "tiny", 99)
    onnx = OnnxRuntime(
        CARDS[name], ModelWeights("parity", lambda: towers), cache=ExportCache(tmp_path), device="cpu",
        precision=precision, threads=2, max_batch_size=8, tokenizer=load_tokenizer(CARDS[name], None),
    )
    return TorchRuntime(towers, torch.device("cpu")), onnx


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _top10(global_vecs: np.ndarray) -> list[int]:
    query, gallery = global_vecs[0], global_vecs[1:]
    return list(np.argsort(-(gallery @ query), kind="stable")[:10])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_fp32_matches_torch(name: str, tmp_path: Path) -> None:
    reference, onnx = _runtimes(name, tmp_path, "fp32")
    pixels = _pixels(name, range(100, 100 + GALLERY + 1))
    torch_global, torch_patches = reference.run_image(pixels)
    onnx_global, onnx_patches = onnx.run_image(pixels)
    assert onnx_global.shape == torch_global.shape and onnx_patches.shape == torch_patches.shape
    assert _cosines(onnx_global, torch_global).min() >= 0.9999
    assert _cosines(onnx_patches, torch_patches).min() >= 0.9999
    assert _top10(onnx_global) == _top10(torch_global)
    # Batch size is dynamic: one image alone gives the same vector as inside a batch.
    alone, _ = onnx.run_image(pixels[3:4])
    assert _cosines(alone, onnx_global[3:4]).min() >= 0.9999
    tokenizer = load_tokenizer(CARDS[name], None)
    if tokenizer is not None:
        ids = tokenizer(["a rose tattoo", "geometric wolf", "koi fish sleeve"])
        assert _cosines(onnx.run_text(ids), reference.run_text(ids)).min() >= 0.9999


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_int8_stays_close_to_fp32(name: str, tmp_path: Path) -> None:
    reference, int8 = _runtimes(name, tmp_path, "int8")
    if name in int8_modes.NO_INT8:  # measured not worth it (squeezenet): fp32 answers, and says so
        assert int8.precision == "fp32"
        return
    assert int8.precision in ("int8-dynamic", "int8-static")  # which int8 EMBED_INT8_MODE=auto took
    pixels = _pixels(name, range(200, 208))
    torch_global, torch_patches = reference.run_image(pixels)
    int8_global, int8_patches = int8.run_image(pixels)
    assert _cosines(int8_global, torch_global).min() >= 0.99
    assert _cosines(int8_patches, torch_patches).min() >= 0.99


def test_a_second_start_uses_the_cache_and_a_truncated_file_is_rebuilt(tmp_path: Path) -> None:
    env = dict(EMBED_MODELS="clip,dinov3", EMBED_RUNTIME="onnx", EMBED_ONNX_CACHE_DIR=str(tmp_path))

    def start_and_embed() -> dict[str, embed_pb2.ModelInfo]:
        with embed_server(**env) as server, grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)])).embeddings.rows == 1
            return {m.name: m for m in stub.ListModels(embed_pb2.ListModelsRequest()).models}

    first = start_and_embed()
    assert not first["clip"].exports_from_cache and not first["dinov3"].exports_from_cache
    files = sorted(tmp_path.glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["clip", "clip", "dinov3"]  # clip image+text, dinov3 image
    stamps = {f: f.stat().st_mtime_ns for f in files}

    second = start_and_embed()
    assert second["clip"].exports_from_cache and second["dinov3"].exports_from_cache
    assert {f: f.stat().st_mtime_ns for f in files} == stamps, "a cached export was rewritten"

    victim = next(f for f in files if f.name.startswith("dinov3"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    third = start_and_embed()
    assert third["clip"].exports_from_cache and not third["dinov3"].exports_from_cache
    assert ExportCache(tmp_path).lookup(_key_of(victim)) == victim, "the rebuilt file does not verify"


def _key_of(path: Path):  # type: ignore[no-untyped-def]
    from embed_server.runtimes.onnx_export import ExportKey

    model, rest = path.stem.split("-", 1)
    fingerprint, tower, precision, _, _ = rest.rsplit("-", 4)
    return ExportKey(model, fingerprint, tower, precision)


TORCH_FREE_PROBE = """
import asyncio, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from embed_server.config import EmbedSettings
from embed_server.server import create_server
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.images import jpeg

async def main():
    server, port = await create_server(EmbedSettings.from_env())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        # SERVING once every configured model is loaded (NOT_SERVING while one failed).
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=240)
        async for reply in watch:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
        watch.cancel()
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        for model in ("clip", "siglip", "dinov2-reg"):
            await stub.Embed(embed_pb2.EmbedRequest(model=model, images=[jpeg(1)]))
        for model in ("clip", "siglip"):
            await stub.EmbedText(embed_pb2.EmbedTextRequest(model=model, texts=["rose"]))
    await server.stop(0)
    print("torch imported:", "torch" in sys.modules)

asyncio.run(main())
"""


def test_a_warm_export_cache_serves_without_importing_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.embed_server.conftest import TINY

    env = {**TINY, "EMBED_MODELS": "clip,siglip,dinov2-reg", "EMBED_RUNTIME": "onnx",
           "EMBED_ONNX_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    exported = subprocess.run([sys.executable, "-m", "embed_server.export"], env=env, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    served = subprocess.run([sys.executable, "-c", TORCH_FREE_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr
    # torch costs about 700 MB of resident memory that a cached ONNX server never uses.
    assert "torch imported: False" in served.stdout

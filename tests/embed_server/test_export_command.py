"""The ahead-of-time export command fills the cache the server then starts from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import TINY, embed_server
from tests.support.background import wait_for_health


def test_export_then_serve_without_exporting(tmp_path: Path) -> None:
    env = {**TINY, "EMBED_MODELS": "siglip,dinov2", "EMBED_RUNTIME": "onnx", "EMBED_ONNX_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "embed_server.export"], env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **env},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "siglip: exported" in result.stdout and "dinov2: exported" in result.stdout
    assert len(list(tmp_path.glob("*.onnx"))) == 3  # siglip image + text, dinov2 image

    with embed_server(**{k: v for k, v in env.items() if k != "EMBED_PORT"}) as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            models = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest()).models
            assert all(m.exports_from_cache for m in models)


def test_export_reports_a_failing_model(tmp_path: Path) -> None:
    env = {"EMBED_MODELS": "clip", "EMBED_RUNTIME": "onnx", "EMBED_WEIGHTS": "pretrained",
           "EMBED_WEIGHTS_DIR": str(tmp_path), "EMBED_ONNX_CACHE_DIR": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "embed_server.export"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "clip: FAILED" in result.stderr and "fetch_weights" in result.stderr

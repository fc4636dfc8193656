"""`python -m bench.quality` end to end: a generated benchmark, a real embed server, figures out.

The server runs tiny random models on loopback port 0 (as in tests/embed_server): the
figures mean nothing about search quality; what is checked is that the pipeline reads,
embeds, caches, ranks and reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.quality.__main__ import main
from bench.quality.near_duplicates import Sizes, generate
from embed_server.config import EmbedSettings
from embed_server.server import create_server
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.background import BackgroundServer, wait_for_health


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    settings = EmbedSettings.from_env({"EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "tiny", "EMBED_MODELS": "clip",
                                       "EMBED_RUNTIME": "torch", "EMBED_HOST": "127.0.0.1", "EMBED_PORT": "0",
                                       # Loaded on first use: the harness must load it to learn its fingerprint.
                                       "EMBED_PRELOAD": "false"})
    with BackgroundServer(lambda: create_server(settings)) as running:
        with grpc.insecure_channel(running.target) as channel:
            wait_for_health(channel)
        yield running


def _images_embedded(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        models = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=10).models
    return next(m.image_batches.items for m in models if m.name == "clip")


def test_near_duplicates_through_the_cli_then_from_the_cache(server: BackgroundServer, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "bench", Sizes(sources=4, views=3, queries_per_source=1, distractors=2), seed=0)
    argv = ["--layout", "folder", "--path", str(tmp_path / "bench"), "--target", server.target, "--model", "clip",
            "--k", "3", "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "out.json"), "--batch", "5"]
    before = _images_embedded(server.target)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out.json").read_text())
    (result,) = report["results"]
    # 4 queries; gallery 4 x (original + 2 other views) + 2 distractors = 14; 18 distinct images.
    assert (result["queries"], result["gallery"], result["queries_without_relevant"]) == (4, 14, 0)
    assert _images_embedded(server.target) - before in (18, 19)  # 19 with the warm-up image that loads the model
    assert report["embedding"]["embedded"] == 18
    for name in ("recall@1", "recall@3", "recall@5", "recall@10", "map@r", "map"):
        assert 0.0 <= result[name] <= 1.0
    assert result["recall@10"] >= result["recall@5"] >= result["recall@3"] >= result["recall@1"]
    assert report["model"]["weights"] == "WEIGHTS_SOURCE_RANDOM"
    assert "| folder | clip | random | torch fp32 | 4 | 14 |" in printed
    assert "say nothing about the pretrained model" in printed
    if "weights_fingerprint" in embed_pb2.ModelInfo.DESCRIPTOR.fields_by_name:
        assert report["model"]["fingerprint"].startswith("sha256:")
        assert report["model"]["fingerprint_source"] == "server"
    else:  # a server from before ListModels sent fingerprints
        assert "sends no weights fingerprint" in printed

    # Again: every vector comes from the disk cache, the server embeds nothing, figures are identical.
    before = _images_embedded(server.target)
    assert main(argv) == 0
    again = json.loads((tmp_path / "out.json").read_text())
    assert _images_embedded(server.target) == before
    assert (again["embedding"]["embedded"], again["embedding"]["from_cache"]) == (0, 18)
    assert again["results"] == report["results"]


def test_unknown_model_and_bad_layout_are_explained(server: BackgroundServer, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path / "bench", Sizes(sources=1, views=1, queries_per_source=1, distractors=0))
    common = ["--target", server.target, "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "o.json")]
    assert main(["--layout", "folder", "--path", str(tmp_path / "bench"), "--model", "dinov2", *common]) == 1
    assert "does not serve 'dinov2'; it serves clip" in capsys.readouterr().err
    assert main(["--layout", "sop", "--path", str(tmp_path / "bench"), *common]) == 2
    assert "Ebay_test.txt" in capsys.readouterr().err

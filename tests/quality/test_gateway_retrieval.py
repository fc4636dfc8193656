"""The harness through the product's gallery search (issue 15): a real gateway (gallery and
blobs in tmp) and a tiny embed server; the figures must be the exact in-process ones."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bench.quality.__main__ import main
from bench.quality.embedding import describe_model, embed_images
from bench.quality.evaluate import evaluate, recall_ks
from bench.quality.gateway import GatewayClient, GatewayError, GatewayGallery
from bench.quality.layouts import read_folder
from tattoo_search.v1 import embed_pb2_grpc
from tests.quality.files import image
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import embed_server, run_gateway, scraper_server, write_catalog

KEY = "key-q"


@pytest.fixture(scope="module")
def embed() -> Iterator[BackgroundServer]:
    with embed_server() as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel, timeout=60)
        yield server


def _benchmark(root: Path) -> Path:
    """Three identities of three views, a distractor, and two gallery files with identical bytes."""
    for identity in range(3):
        for view in range(3):
            image(root / f"id{identity}" / f"{view}.jpg", seed=10 * identity + view, size=(96, 80))
    image(root / "_distractors" / "d.jpg", seed=99, size=(96, 80))
    (root / "id0" / "3-copy.jpg").write_bytes((root / "id0" / "0.jpg").read_bytes())
    return root


def _collections(url: str) -> list[str]:
    request = urllib.request.Request(url + "/collections", headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return [c["name"] for c in json.loads(response.read())["collections"]]


async def test_gateway_figures_equal_exact_cosine_and_the_collection_goes(
        embed: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    benchmark = read_folder(_benchmark(tmp_path / "bench"))
    with grpc.insecure_channel(embed.target) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        vectors, _ = embed_images(stub, describe_model(stub, "clip"), benchmark.gallery, None)
    ks = recall_ks(3)
    queries = vectors[[benchmark.gallery.index(q.image) for q in benchmark.queries]]
    exact = evaluate(benchmark, vectors, queries, ks)

    settings = gateway_settings(embed.target, "127.0.0.1:1", None, gallery="on", gallery_path=tmp_path / "gallery",
                                blobs_path=tmp_path / "blobs", api_keys=(f"bench:{KEY}",))
    with scraper_server(write_catalog(tmp_path / "catalog.jsonl", [])) as scraper:
        settings = settings.replace(scraper_target=scraper.target)
        async with run_gateway(settings) as gw:
            def through_gateway() -> tuple[dict[str, object], str, int]:
                with GatewayGallery(GatewayClient(gw.url, KEY), benchmark, "clip", batch=4) as gallery:
                    figures = evaluate(benchmark, vectors, queries, ks, retriever=gallery.retriever())
                    return figures, gallery.collection, gallery.limit

            figures, name, limit = await asyncio.to_thread(through_gateway)
            # The same through the CLI: the report's figures are the gateway's, and say how they were made.
            monkeypatch.setenv("TATTOO_API_KEY", KEY)
            argv = ["--layout", "folder", "--path", str(benchmark.root), "--target", embed.target, "--model", "clip",
                    "--k", "3", "--no-cache", "--json", str(tmp_path / "out.json"), "--retrieval", "gateway",
                    "--gateway", gw.url]
            assert await asyncio.to_thread(main, argv) == 0
            (reported,) = json.loads((tmp_path / "out.json").read_text())["results"]
            assert reported.pop("retrieval").startswith(f"gateway {gw.url}, max_results 100")
            assert reported == figures
            assert limit == settings.max_results_limit  # read from /openapi.json
            assert name.startswith("quality-folder-")
            assert not [c for c in await asyncio.to_thread(_collections, gw.url) if c.startswith("quality-")]

            # A refusal names the call: a wrong key cannot create the collection.
            def with_a_wrong_key() -> None:
                with GatewayGallery(GatewayClient(gw.url, "wrong"), benchmark, "clip", limit=50):
                    pass

            with pytest.raises(GatewayError, match="POST /collections answered 401"):
                await asyncio.to_thread(with_a_wrong_key)

    assert (figures["gallery"], figures["queries"]) == (11, 10)
    assert figures["truncated"] is False and figures["ranking_depth"] == 11
    for metric in (*(f"recall@{k}" for k in ks), "map@r", "map"):
        assert figures[metric] == pytest.approx(exact[metric], abs=1e-9), metric
    assert exact["recall@1"] > 0  # the duplicate pair finds each other: the figures are not all zero

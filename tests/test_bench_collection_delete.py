"""bench.collection_delete runs (a bench nobody runs rots): a small collection, blobs in a
folder, both deletion paths on the gateway's own code; each path must leave nothing."""

from __future__ import annotations

import argparse

import pytest

from bench.collection_delete import run


@pytest.mark.asyncio
async def test_the_collection_delete_bench_empties_both_copies() -> None:
    report = await run(argparse.Namespace(images=30, blobs="local"))
    (figures,) = report["runs"]  # type: ignore[misc]
    assert figures["images"] == 30 and figures["blobs"] == "local"
    assert figures["before_request_s"] >= 0 and figures["after_request_ms"] >= 0 and figures["after_background_s"] >= 0

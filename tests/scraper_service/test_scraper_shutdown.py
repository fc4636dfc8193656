"""``python -m scraper_service`` stops gracefully on SIGTERM: health turns NOT_SERVING at
once, a search in flight still completes, new searches are refused retryably, exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scraper_service.server import SERVICE_NAME
from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc
from tests.support.background import wait_for_health
from tests.support.gated_service import GatedService

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROSE = "http://127.0.0.1:9/red-rose.png"


def test_sigterm_finishes_the_search_in_flight_then_exits_0(tmp_path: Path) -> None:
    manifest = tmp_path / "catalog.jsonl"
    entry = {"url": ROSE, "platform": "pinterest", "title": "Red rose", "tags": ["rose"]}
    manifest.write_text(json.dumps(entry) + "\n")
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"SCRAPER_PORT": "0", "SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": str(manifest), "SCRAPER_GRACE_S": "60"}
    scraper = GatedService("scraper_service", "scraper_service.servicer:ScraperServicer.Search", env, gate)
    try:
        port = scraper.port()
        assert port, "".join(scraper.log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scraper_pb2_grpc.ScraperServiceStub(channel)
            in_flight = stub.Search(scraper_pb2.SearchRequest(query="rose", min_results=1), timeout=120)
            assert scraper.wait_entered()

            scraper.terminate()
            # While the search is held at the gate: NOT_SERVING for the server and the service.
            assert wait_for_health(channel, NOT_SERVING, timeout=30) == NOT_SERVING
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status == NOT_SERVING
            try:
                list(stub.Search(scraper_pb2.SearchRequest(query="rose"), timeout=10))
                raise AssertionError("a new search was accepted while stopping")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE  # retryable: try another replica
                assert "shutting down" in (exc.details() or "")

            scraper.release()
            assert [c.image_url for c in in_flight] == [ROSE]
            assert in_flight.code() == grpc.StatusCode.OK
        code, log = scraper.finish()
        assert code == 0, log
        assert "every call in flight finished" in log
    finally:
        scraper.kill()

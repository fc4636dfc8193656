"""`python -m embed_server` stops gracefully on SIGTERM: health turns NOT_SERVING at once
(the server, the service and each model), an embed call in flight still completes, new
calls are refused retryably, and the process exits 0."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embed_server.server import SERVICE_NAME, model_health_name
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import TINY
from tests.support.background import wait_for_health
from tests.support.gated_service import GatedService
from tests.support.images import jpeg

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


# Slow: starts the embed server as a process and stops it with SIGTERM.
@pytest.mark.slow
def test_sigterm_finishes_the_embed_call_in_flight_then_exits_0(tmp_path: Path) -> None:
    env = {**TINY, "EMBED_MODELS": "clip", "EMBED_RUNTIME": "torch", "EMBED_THREADS": "1"}
    server = GatedService("embed_server", "embed_server.service:EmbedServicer.Embed", env, tmp_path)
    try:
        port = server.port()
        assert port, "".join(server.log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert wait_for_health(channel, SERVING, timeout=240) == SERVING
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            in_flight = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1), jpeg(2)]), timeout=240)
            assert server.wait_entered()

            server.terminate()
            # While the call is held at the gate: NOT_SERVING under every name.
            assert wait_for_health(channel, NOT_SERVING, timeout=30) == NOT_SERVING
            health = health_pb2_grpc.HealthStub(channel)
            for name in (SERVICE_NAME, model_health_name("clip")):
                assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == NOT_SERVING, name
            try:
                stub.ListModels(embed_pb2.ListModelsRequest(), timeout=10)
                raise AssertionError("a new call was accepted while stopping")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE  # retryable: try another replica
                assert "shutting down" in (exc.details() or "")

            server.release()
            reply = in_flight.result(timeout=240)
            assert reply.embeddings.rows == 2
        code, log = server.finish()
        assert code == 0, log
        assert "every call in flight finished" in log
    finally:
        server.kill()

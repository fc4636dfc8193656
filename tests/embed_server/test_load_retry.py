"""A model whose load failed is tried again in the background: weights copied in later
are picked up without a restart, and health reports each model on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embed_server.server import model_health_name
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.checkpoints import write_tiny_checkpoint
from tests.support.images import jpeg

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_for(stub: embed_pb2_grpc.EmbedServiceStub, condition: Callable[[dict[str, embed_pb2.ModelInfo]], bool],
              timeout: float = 120) -> dict[str, embed_pb2.ModelInfo]:
    deadline = time.monotonic() + timeout
    while True:
        models = {m.name: m for m in stub.ListModels(embed_pb2.ListModelsRequest(), timeout=10).models}
        if condition(models):
            return models
        assert time.monotonic() < deadline, f"condition never held: {models}"
        time.sleep(0.05)


def _health(channel: grpc.Channel, service: str) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


# Slow: waits through the loader's retries (seconds, by design).
@pytest.mark.slow
def test_weights_copied_in_later_are_loaded_without_a_restart(tmp_path: Path) -> None:
    weights, staging = tmp_path / "weights", tmp_path / "staging"
    weights.mkdir()
    write_tiny_checkpoint("dinov3", weights)  # dinov3 is there from the start, dinov2 is not
    env = {"EMBED_WEIGHTS": "pretrained", "EMBED_ARCHITECTURE": "full", "EMBED_MODELS": "dinov2,dinov3",
           "EMBED_WEIGHTS_DIR": str(weights), "EMBED_LOAD_RETRY_INITIAL_S": "0.2", "EMBED_LOAD_RETRY_MAX_S": "0.5"}
    with embed_server(**env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            models = _wait_for(stub, lambda m: m["dinov2"].state == embed_pb2.MODEL_STATE_FAILED
                               and m["dinov3"].state == embed_pb2.MODEL_STATE_READY)
            failed = models["dinov2"]
            assert "fetch_weights" in failed.error, "ListModels says why the model is down"
            assert failed.load_attempts >= 1
            assert failed.next_retry_unix_seconds > time.time() - 5, "and when it is tried next"
            # Each model's own health, so a balancer can send dinov2 elsewhere and dinov3 here.
            assert wait_for_health(channel, SERVING, timeout=30, service=model_health_name("dinov3")) == SERVING
            assert _health(channel, model_health_name("dinov2")) == NOT_SERVING
            assert _health(channel, "") == NOT_SERVING  # not every configured model is ready
            with pytest_raises_rpc() as error:
                stub.Embed(embed_pb2.EmbedRequest(model="dinov2", images=[jpeg(1)]), timeout=30)
            assert "next try in" in error.value.details()

            # The operator copies the weights in (whole, by a rename, as one should).
            write_tiny_checkpoint("dinov2", staging)
            (staging / "dinov2").rename(weights / "dinov2")

            models = _wait_for(stub, lambda m: m["dinov2"].state == embed_pb2.MODEL_STATE_READY)
            assert models["dinov2"].load_attempts >= 2 and models["dinov2"].error == ""
            assert models["dinov2"].next_retry_unix_seconds == 0
            assert wait_for_health(channel, SERVING, timeout=30, service=model_health_name("dinov2")) == SERVING
            assert wait_for_health(channel, SERVING, timeout=30) == SERVING
            response = stub.Embed(embed_pb2.EmbedRequest(model="dinov2", images=[jpeg(1)]), timeout=30)
            assert response.embeddings.rows == 1


def test_the_retry_wait_doubles_up_to_its_cap(tmp_path: Path) -> None:
    env = {"EMBED_WEIGHTS": "pretrained", "EMBED_ARCHITECTURE": "full", "EMBED_MODELS": "dinov2",
           "EMBED_WEIGHTS_DIR": str(tmp_path), "EMBED_LOAD_RETRY_INITIAL_S": "0.05", "EMBED_LOAD_RETRY_MAX_S": "3600"}
    with embed_server(**env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            # 0.05, 0.1, 0.2, ... : by the seventh attempt the wait is 0.05 * 2**6 = 3.2 s.
            models = _wait_for(stub, lambda m: m["dinov2"].load_attempts >= 7
                               and m["dinov2"].state == embed_pb2.MODEL_STATE_FAILED)
            info = models["dinov2"]
            wait = info.next_retry_unix_seconds - time.time()
            assert 0 < wait <= 0.05 * 2 ** (info.load_attempts - 1) + 0.5, (wait, info.load_attempts)
            assert _health(channel, model_health_name("dinov2")) == NOT_SERVING


def pytest_raises_rpc():  # a short alias: the status is checked by the caller
    import pytest

    return pytest.raises(grpc.RpcError)

"""The embed server's Prometheus metrics (EMBED_METRICS_PORT): a real server, real calls,
the endpoint scraped over HTTP and read with Prometheus's own parser."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from embed_server.config import EmbedSettings
from embed_server.runtimes.torch_runtime import TorchRuntime
from embed_server.server import create_server
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import TINY, embed_server
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.images import jpeg
from tests.support.metrics import Samples, free_port, listening_ports, names, scrape, value

STATES = ("not_loaded", "loading", "ready", "failed")
# One model with a text tower, on torch and the CPU: quick to load, and no GPU series.
CLIP = {"EMBED_MODELS": "clip", "EMBED_RUNTIME": "torch", "EMBED_DEVICE": "cpu"}


@pytest.fixture
def served() -> Iterator[tuple[BackgroundServer, embed_pb2_grpc.EmbedServiceStub, int]]:
    port = free_port()
    with embed_server(**CLIP, EMBED_METRICS_PORT=str(port)) as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            yield server, embed_pb2_grpc.EmbedServiceStub(channel), port


def _wait_for(port: int, condition: Callable[[Samples], bool], timeout_s: float = 60) -> Samples:
    """The first scrape where `condition` holds (a wait for the server, not a time limit on it)."""
    deadline = time.monotonic() + timeout_s
    while not condition(samples := scrape(port)):
        assert time.monotonic() < deadline, f"never held; last scrape: {samples}"
        time.sleep(0.02)
    return samples


def test_embeds_texts_batches_and_calls_by_status_are_counted(served: Any) -> None:
    server, stub, port = served
    assert server.server.metrics_port == port
    before = scrape(port)
    for state in STATES:
        assert value(before, "embed_model_state", model="clip", state=state) == (1.0 if state == "ready" else 0.0)
    assert value(before, "embed_queue_depth", model="clip") == 0
    # The series exist from the load on (so rate() has a start), and the warm-up pass is not traffic.
    assert value(before, "embed_images_total", model="clip") == 0

    stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1), jpeg(2), jpeg(3)]), timeout=60)
    stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(4), jpeg(5)]), timeout=60)
    for bad in (embed_pb2.EmbedRequest(model="clip", images=[b"not an image"]),
                embed_pb2.EmbedRequest(model="no-such-model", images=[jpeg(6)])):
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(bad, timeout=60)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    stub.EmbedText(embed_pb2.EmbedTextRequest(model="clip", texts=["rose tattoo", "koi fish"]), timeout=60)
    stub.ListModels(embed_pb2.ListModelsRequest(), timeout=60)
    after = scrape(port)

    # Sequential requests: one forward pass each; the undecodable image never reached one.
    assert value(after, "embed_images_total", model="clip") == 5
    assert value(after, "embed_texts_total", model="clip") == 2
    image = {"model": "clip", "kind": "image"}
    assert value(after, "embed_batch_size_count", **image) == 2
    assert value(after, "embed_batch_size_sum", **image) == 5
    assert value(after, "embed_batch_size_bucket", **image, le="2.0") == 1  # the pass of 2
    assert value(after, "embed_batch_size_bucket", **image, le="4.0") == 2  # and the pass of 3
    assert value(after, "embed_queue_wait_seconds_count", **image) == 5  # every image waited once
    assert value(after, "embed_inference_seconds_count", **image) == 2
    assert (value(after, "embed_inference_seconds_sum", **image) or 0) > 0
    assert value(after, "embed_batch_size_sum", model="clip", kind="text") == 2
    assert value(after, "embed_failed_batches_total", **image) == 0

    assert value(after, "embed_requests_total", method="Embed", code="OK") == 2
    assert value(after, "embed_requests_total", method="Embed", code="INVALID_ARGUMENT") == 2
    assert value(after, "embed_requests_total", method="EmbedText", code="OK") == 1
    assert value(after, "embed_requests_total", method="ListModels", code="OK") == 1
    assert not [labels for name, labels in after if name == "embed_requests_total" and ("method", "Check") in labels], (
        "health probes are not counted as traffic")
    assert value(after, "embed_requests_in_flight") == 0
    assert value(after, "embed_queue_depth", model="clip") == 0
    assert value(after, "embed_model_load_attempts_total", model="clip") == 1
    assert (value(after, "process_resident_memory_bytes") or 0) > 0
    assert not {"embed_device_memory_used_bytes", "embed_device_memory_total_bytes"} & names(after), "none on a CPU"

    server.call(server.server.stop(0))
    with pytest.raises(urllib.error.URLError):
        scrape(port)  # the metrics server stopped with the gRPC server


def test_queue_depth_counts_the_images_waiting_behind_a_forward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    held, entered, release = threading.Event(), threading.Event(), threading.Event()
    original = TorchRuntime.run_image

    def run_image(self: TorchRuntime, pixels: np.ndarray) -> Any:
        if held.is_set() and not entered.is_set():  # hold the first pass of the test, not the warm-up
            entered.set()
            release.wait(120)
        return original(self, pixels)

    monkeypatch.setattr(TorchRuntime, "run_image", run_image)
    port = free_port()
    with embed_server(**CLIP, EMBED_METRICS_PORT=str(port), EMBED_MAX_QUEUE_DELAY_MS="0") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            held.set()
            first = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)]), timeout=120)
            try:
                assert entered.wait(60), "the first request never reached its forward pass"
                behind = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(2), jpeg(3), jpeg(4)]),
                                           timeout=120)
                # The image in the pass is not waiting; the three behind it are.
                waiting = _wait_for(port, lambda s: value(s, "embed_queue_depth", model="clip") == 3)
                assert value(waiting, "embed_requests_in_flight") == 2
                assert value(waiting, "embed_images_total", model="clip") == 0
            finally:
                release.set()
            first.result()
            behind.result()
            done = scrape(port)
            assert value(done, "embed_queue_depth", model="clip") == 0
            assert value(done, "embed_images_total", model="clip") == 4
            assert value(done, "embed_batch_size_count", model="clip", kind="image") == 2


def test_a_model_that_failed_to_load_shows_in_the_state_gauge(tmp_path: Path) -> None:
    port = free_port()
    env = {"EMBED_WEIGHTS": "pretrained", "EMBED_ARCHITECTURE": "full", "EMBED_MODELS": "dinov2",
           "EMBED_WEIGHTS_DIR": str(tmp_path), "EMBED_LOAD_RETRY_INITIAL_S": "60", "EMBED_METRICS_PORT": str(port)}
    with embed_server(**env) as server:
        samples = _wait_for(port, lambda s: value(s, "embed_model_state", model="dinov2", state="failed") == 1)
        assert value(samples, "embed_model_state", model="dinov2", state="ready") == 0
        assert value(samples, "embed_model_load_attempts_total", model="dinov2") == 1
        with grpc.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.RpcError) as error:
                embed_pb2_grpc.EmbedServiceStub(channel).Embed(
                    embed_pb2.EmbedRequest(model="dinov2", images=[jpeg(1)]), timeout=60)
        assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        after = scrape(port)
        assert value(after, "embed_requests_total", method="Embed", code="FAILED_PRECONDITION") == 1


def test_with_metrics_port_zero_only_grpc_listens() -> None:
    before = listening_ports()
    with embed_server(**CLIP) as server:  # EMBED_METRICS_PORT defaults to 0
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)  # stopping a server mid-load is another test's business
        assert server.server.metrics_port is None
        assert listening_ports() - before == {server.port}


def test_a_metrics_port_in_use_is_a_clear_error_and_leaves_nothing_listening() -> None:
    grpc_port = free_port()
    with socket_listening() as taken:
        settings = EmbedSettings.from_env({**TINY, **CLIP, "EMBED_PORT": str(grpc_port),
                                           "EMBED_METRICS_PORT": str(taken)})
        with pytest.raises(OSError) as error:
            asyncio.run(create_server(settings))
    assert "EMBED_METRICS_PORT" in str(error.value) and str(taken) in str(error.value)
    with socket_listening(grpc_port):
        pass  # the gRPC port is free


def test_a_grpc_port_in_use_closes_the_metrics_port_again() -> None:
    metrics_port = free_port()
    with socket_listening() as taken:
        settings = EmbedSettings.from_env({**TINY, **CLIP, "EMBED_PORT": str(taken),
                                           "EMBED_METRICS_PORT": str(metrics_port)})
        with pytest.raises(OSError) as error:
            asyncio.run(create_server(settings))
    assert "EMBED_PORT" in str(error.value)
    with socket_listening(metrics_port):
        pass  # the metrics port is free


@contextlib.contextmanager
def socket_listening(port: int = 0) -> Iterator[int]:
    """A socket listening on `port` (a free one if 0) while the block runs; yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        yield int(listener.getsockname()[1])

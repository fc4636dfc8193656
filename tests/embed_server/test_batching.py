"""Dynamic batching through the real server: merging, overload and cancellation."""

from __future__ import annotations

import grpc
import pytest

from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg


def image_stats(stub: embed_pb2_grpc.EmbedServiceStub, model: str) -> embed_pb2.BatchStats:
    (info,) = [m for m in stub.ListModels(embed_pb2.ListModelsRequest()).models if m.name == model]
    return info.image_batches


def test_concurrent_requests_are_merged_into_one_forward_pass() -> None:
    # A queue delay long enough that 16 requests sent at once all arrive inside it.
    with embed_server(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="16", EMBED_MAX_QUEUE_DELAY_MS="500") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            futures = [stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(i)])) for i in range(16)]
            assert all(f.result(timeout=60).embeddings.rows == 1 for f in futures)
            stats = image_stats(stub, "clip")
            assert stats.items == 16
            assert stats.largest_batch > 1 and stats.batches < 16, stats


def test_batches_never_exceed_the_maximum_size() -> None:
    with embed_server(EMBED_MODELS="dinov3", EMBED_MAX_BATCH_SIZE="4", EMBED_MAX_QUEUE_DELAY_MS="200") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            response = stub.Embed(embed_pb2.EmbedRequest(model="dinov3", images=[jpeg(i) for i in range(10)]))
            assert response.embeddings.rows == 10
            stats = image_stats(stub, "dinov3")
            assert stats.largest_batch == 4 and stats.batches == 3 and stats.items == 10


def test_a_full_queue_answers_resource_exhausted_at_once() -> None:
    # The first request waits out a long queue delay (its batch is not full); the
    # second does not fit in the queue and must be refused while the first still waits.
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_SIZE="8", EMBED_MAX_IMAGES_PER_REQUEST="8",
               EMBED_MAX_QUEUE_DELAY_MS="3000")
    with embed_server(**env) as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            waiting = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(i) for i in range(5)]))
            _wait_until_queued(stub, "clip", 5)
            with pytest.raises(grpc.RpcError) as error:
                stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(i) for i in range(4)]), timeout=30)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded" in error.value.details() and "retry" in error.value.details()
            assert not waiting.done(), "the refusal had to wait for the queued batch"
            assert waiting.result(timeout=60).embeddings.rows == 5
            assert image_stats(stub, "clip").rejected == 1


def test_a_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_DELAY_MS="1500")
    with embed_server(**env) as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            # A deadline shorter than the queue delay: the client gives up first.
            with pytest.raises(grpc.RpcError) as error:
                stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(i) for i in range(3)]), timeout=0.5)
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            cancelled = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(9)] * 2))
            _wait_until_queued(stub, "clip", 2)
            cancelled.cancel()
            _wait_until_queued(stub, "clip", 0)
            assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(7)]), timeout=30).embeddings.rows == 1
            stats = image_stats(stub, "clip")
            assert stats.items == 1, f"withdrawn images ran anyway: {stats}"


def _wait_until_queued(stub: embed_pb2_grpc.EmbedServiceStub, model: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if image_stats(stub, model).queued == count:
            return
        time.sleep(0.01)
    raise AssertionError(f"queue of {model} never reached {count}: {image_stats(stub, model)}")

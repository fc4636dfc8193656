"""Dynamic batching through the real server: merging, overload and cancellation."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import grpc
import pytest

from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg


@contextlib.contextmanager
def serving_stub(**env: str) -> Iterator[embed_pb2_grpc.EmbedServiceStub]:
    """A stub of a fresh embed server started with `env`, once it reports healthy."""
    with embed_server(**env) as server, grpc.insecure_channel(server.target) as channel:
        wait_for_health(channel)
        yield embed_pb2_grpc.EmbedServiceStub(channel)


def _request(model: str, images: int) -> embed_pb2.EmbedRequest:
    """`images` different pictures for `model`."""
    return embed_pb2.EmbedRequest(model=model, images=[jpeg(i) for i in range(images)])


def image_stats(stub: embed_pb2_grpc.EmbedServiceStub, model: str) -> embed_pb2.BatchStats:
    (info,) = [m for m in stub.ListModels(embed_pb2.ListModelsRequest()).models if m.name == model]
    return info.image_batches


# Slow: a server of its own with a half-second queue delay, 16 calls at once.
@pytest.mark.slow
def test_concurrent_requests_are_merged_into_one_forward_pass() -> None:
    # A queue delay long enough that 16 requests sent at once all arrive inside it.
    with serving_stub(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="16", EMBED_MAX_QUEUE_DELAY_MS="500") as stub:
        futures = [stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(i)])) for i in range(16)]
        assert all(f.result(timeout=60).embeddings.rows == 1 for f in futures)
        stats = image_stats(stub, "clip")
        assert stats.items == 16
        assert stats.largest_batch > 1 and stats.batches < 16, stats


def test_batches_never_exceed_the_maximum_size() -> None:
    with serving_stub(EMBED_MODELS="dinov3", EMBED_MAX_BATCH_SIZE="4", EMBED_MAX_QUEUE_DELAY_MS="200") as stub:
        response = stub.Embed(_request("dinov3", 10))
        assert response.embeddings.rows == 10
        stats = image_stats(stub, "dinov3")
        assert stats.largest_batch == 4 and stats.batches == 3 and stats.items == 10


def test_a_full_queue_answers_resource_exhausted_at_once() -> None:
    # The first request waits out a long queue delay (its batch is not full); the
    # second does not fit in the queue and must be refused while the first still waits.
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_SIZE="8", EMBED_MAX_IMAGES_PER_REQUEST="8",
               EMBED_MAX_QUEUE_DELAY_MS="3000")
    with serving_stub(**env) as stub:
        waiting = stub.Embed.future(_request("clip", 5))
        _wait_until_queued(stub, "clip", 5)
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(_request("clip", 4), timeout=30)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "overloaded" in error.value.details() and "retry" in error.value.details()
        assert not waiting.done(), "the refusal had to wait for the queued batch"
        assert waiting.result(timeout=60).embeddings.rows == 5
        assert image_stats(stub, "clip").rejected == 1


def test_a_cancelled_request_leaves_the_queue_and_never_runs() -> None:
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_DELAY_MS="1500")
    with serving_stub(**env) as stub:
        # A deadline shorter than the queue delay: the client gives up first.
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(_request("clip", 3), timeout=0.5)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[jpeg(9)] * 2))
        _wait_until_queued(stub, "clip", 2)
        cancelled.cancel()
        _wait_until_queued(stub, "clip", 0)
        assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(7)]), timeout=30).embeddings.rows == 1
        stats = image_stats(stub, "clip")
        assert stats.items == 1, f"withdrawn images ran anyway: {stats}"


def model_info(stub: embed_pb2_grpc.EmbedServiceStub, model: str) -> embed_pb2.ModelInfo:
    (info,) = [m for m in stub.ListModels(embed_pb2.ListModelsRequest()).models if m.name == model]
    return info


def test_a_burst_the_queue_has_no_room_for_is_refused_before_decoding() -> None:
    # One request waits in the queue (its batch is not full, the delay is long); a burst
    # of concurrent requests that cannot fit beside it must all be refused, and none of
    # their images decoded: refusing after decoding is what filled memory in a burst.
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_SIZE="8", EMBED_MAX_IMAGES_PER_REQUEST="8",
               EMBED_MAX_QUEUE_DELAY_MS="60000")
    with serving_stub(**env) as stub:
        waiting = stub.Embed.future(_request("clip", 5))
        _wait_until_queued(stub, "clip", 5)
        burst = [stub.Embed.future(_request("clip", 4))
                 for _ in range(20)]
        for call in burst:
            with pytest.raises(grpc.RpcError) as error:
                call.result(timeout=60)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = model_info(stub, "clip")
        assert info.images_decoded == 5, "refused requests must not decode their images"
        assert info.image_batches.rejected == 20
        # Cancelling the waiting request gives its room back: a full request fits again.
        waiting.cancel()
        _wait_until_queued(stub, "clip", 0)
        assert stub.Embed(_request("clip", 8),
                          timeout=60).embeddings.rows == 8
        info = model_info(stub, "clip")
        assert (info.image_batches.reserved, info.image_batches.queued, info.images_decoded) == (0, 0, 13)


def test_concurrent_admissions_cannot_overcommit_the_queue() -> None:
    # Room for 5 more items, and twenty requests of 4 arrive together: room is reserved
    # at admission, before decoding, so exactly one is admitted and decodes; without the
    # reservation every request would pass the check while the others were decoding.
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_SIZE="8", EMBED_MAX_IMAGES_PER_REQUEST="4",
               EMBED_MAX_QUEUE_DELAY_MS="60000", EMBED_DECODE_WORKERS="2")
    with serving_stub(**env) as stub:
        # 3 + 4 = 7 < 8: no batch forms during the test, so nothing leaves the queue.
        first = stub.Embed.future(_request("clip", 3))
        _wait_until_queued(stub, "clip", 3)
        burst = [stub.Embed.future(_request("clip", 4))
                 for _ in range(20)]
        _wait_until(stub, lambda info: info.image_batches.rejected == 19 and info.image_batches.queued == 7)
        deadline = time.monotonic() + 60  # the refusals travel back to this client
        while sum(call.done() for call in burst) < 19 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = [call for call in burst if call.done()]
        assert len(refused) == 19
        assert all(call.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused)
        info = model_info(stub, "clip")
        assert info.images_decoded == 3 + 4, f"only the admitted request may decode: {info}"
        for call in [first, *burst]:
            call.cancel()
        _wait_until(stub, lambda info: info.image_batches.queued == 0 and info.image_batches.reserved == 0)


def test_reservations_are_returned_after_errors_and_cancellations(tmp_path) -> None:
    from tests.support.images import encode, noise_image

    # Large PNGs take a while to decode on one decode thread: long enough to cancel a
    # request while its reservation is held.
    big = encode(noise_image(1, (2500, 2500)), "PNG", compress_level=1)
    env = dict(EMBED_MODELS="clip", EMBED_MAX_BATCH_SIZE="8", EMBED_MAX_QUEUE_SIZE="8", EMBED_MAX_IMAGES_PER_REQUEST="8",
               EMBED_MAX_QUEUE_DELAY_MS="0", EMBED_DECODE_WORKERS="1", EMBED_MAX_REQUEST_BYTES=str(256 * 1024 * 1024))
    with serving_stub(**env) as stub:
        # An undecodable image fails the request: its room comes back.
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)] * 7 + [b"not an image"]), timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A request cancelled while its images decode: its room comes back too.
        cancelled = stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=[big] * 6))
        _wait_until(stub, lambda info: info.image_batches.reserved == 6)
        cancelled.cancel()
        _wait_until(stub, lambda info: info.image_batches.reserved == 0 and info.image_batches.queued == 0)
        # A full request still fits: nothing leaked.
        response = stub.Embed(_request("clip", 8), timeout=60)
        assert response.embeddings.rows == 8
        assert model_info(stub, "clip").image_batches.reserved == 0


def _wait_until(stub: embed_pb2_grpc.EmbedServiceStub, condition, model: str = "clip") -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = model_info(stub, model)
        if condition(info):
            return
        time.sleep(0.01)
    raise AssertionError(f"condition never held: {model_info(stub, model)}")


def _wait_until_queued(stub: embed_pb2_grpc.EmbedServiceStub, model: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if image_stats(stub, model).queued == count:
            return
        time.sleep(0.01)
    raise AssertionError(f"queue of {model} never reached {count}: {image_stats(stub, model)}")

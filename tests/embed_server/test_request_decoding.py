"""Malformed requests: undecodable protobuf bytes and out-of-range attention
temperatures are INVALID_ARGUMENT with a sentence, never UNKNOWN or NaN."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from embed_server import attention
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg

_TRUNCATED_EMBED = embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)]).SerializeToString()[:-100]


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    with embed_server(EMBED_MODELS="clip", EMBED_RUNTIME="torch") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            yield channel


@pytest.mark.parametrize(
    ("method", "raw", "message"),
    [
        ("/tattoo_search.v1.EmbedService/Embed", b"\xff\xff\xff\xff\xff", "EmbedRequest"),
        ("/tattoo_search.v1.EmbedService/Embed", _TRUNCATED_EMBED, "EmbedRequest"),
        ("/tattoo_search.v1.EmbedService/CrossAttention", b"\x12\x7fjust a few bytes", "CrossAttentionRequest"),
        ("/tattoo_search.v1.EmbedService/ListModels", b"\x0b", "ListModelsRequest"),
        ("/grpc.health.v1.Health/Check", b"\x0a\x10abc", "HealthCheckRequest"),
    ],
)
def test_undecodable_request_bytes_are_invalid_argument(channel: grpc.Channel, method: str, raw: bytes, message: str) -> None:
    # No serializer: the bytes go on the wire exactly as given.
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as error:
        call(raw, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert f"the request is not a valid {message} message" in error.value.details()


def test_a_server_stream_with_undecodable_bytes_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as error:
        list(call(b"\x0a\x10abc", timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert "the request is not a valid HealthCheckRequest message" in error.value.details()


def test_the_server_still_serves_after_undecodable_requests(channel: grpc.Channel) -> None:
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(3)]), timeout=30).embeddings.rows == 1


@pytest.mark.parametrize("temperature", [1e-45, 1e-4, 1e4, float("inf"), float("nan")])
def test_a_temperature_outside_the_range_is_refused_naming_it(channel: grpc.Channel, temperature: float) -> None:
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    request = embed_pb2.CrossAttentionRequest(
        model="clip", query_image=jpeg(1), candidate_images=[jpeg(2)], include_attention=True, temperature=temperature
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.CrossAttention(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the allowed range 0.001 to 100" in error.value.details(), error.value.details()


@pytest.mark.parametrize("temperature", [attention.MIN_TEMPERATURE, attention.MAX_TEMPERATURE])
def test_temperatures_at_the_limits_give_finite_attention(channel: grpc.Channel, temperature: float) -> None:
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    request = embed_pb2.CrossAttentionRequest(
        model="clip", query_image=jpeg(1), candidate_images=[jpeg(2), jpeg(1)], include_attention=True,
        include_similarity_matrix=True, temperature=temperature,
    )
    for candidate in stub.CrossAttention(request, timeout=30).candidates:
        weights = to_numpy(candidate.attention)
        assert np.all(np.isfinite(weights)), "attention must never be NaN or inf"
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
        assert np.all(weights.argmax(axis=1) == to_numpy(candidate.similarity_matrix).argmax(axis=1))


def test_the_softmax_itself_stays_finite_at_a_vanishing_temperature() -> None:
    # Defence in depth below the request check: similarity / 1e-45 overflows to inf, and
    # inf - inf is NaN unless the maximum is subtracted before dividing.
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(4, 8)).astype(np.float32)
    patches /= np.linalg.norm(patches, axis=1, keepdims=True)
    result = attention.correspond(
        patches, patches, patches[0], patches[0], (2, 2), include_attention=True, temperature=1e-45
    )
    assert result.attention is not None and np.all(np.isfinite(result.attention))
    np.testing.assert_allclose(result.attention, np.eye(4), atol=1e-6)  # a hard argmax onto itself

"""gRPC's own retry policy on the gateway's channels, counted on flaky servicers.

Each servicer is a real ``grpc.aio`` server on a loopback port; it fails the first
calls with a chosen status and counts every attempt that reaches it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from search_gateway.clients.backends import (
    EMBED_SERVICE,
    BackendRejected,
    EmbedClient,
    ScraperClient,
    embed_channel,
    scraper_channel,
)
from search_gateway.clients.channels import MAX_ATTEMPTS_CAP, service_config
from search_gateway.errors import BackendUnavailable
from service_common.tensors import float_matrix
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc, scraper_pb2, scraper_pb2_grpc

# Over gRPC's default per-call retry buffer (256 KiB): a batch this size must still be retried.
BIG_IMAGE = b"\xff\xd8\xff" + bytes(1024 * 1024)


class FlakyEmbed(embed_pb2_grpc.EmbedServiceServicer):
    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures = failures
        self.code = code
        self.attempts = 0

    async def Embed(self, request: embed_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        self.attempts += 1
        if self.attempts <= self.failures:
            await context.abort(self.code, f"attempt {self.attempts} fails")
        return embed_pb2.EmbedResponse(
            provenance=embed_pb2.Provenance(model=request.model, weights=embed_pb2.WEIGHTS_SOURCE_RANDOM),
            embeddings=float_matrix([[1.0, 0.0]] * len(request.images)))


class FlakyScraper(scraper_pb2_grpc.ScraperServiceServicer):
    """Fails the first ``failures`` calls before any candidate; with ``fail_after`` set,
    fails every call after streaming that many candidates."""

    def __init__(self, failures: int = 0, fail_after: int | None = None) -> None:
        self.failures = failures
        self.fail_after = fail_after
        self.attempts = 0

    async def Search(self, request: scraper_pb2.SearchRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        self.attempts += 1
        if self.attempts <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        for i in range(3):
            if self.fail_after is not None and i == self.fail_after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gone mid-stream")
            yield scraper_pb2.Candidate(image_url=f"https://img.example/{i}.jpg")


@asynccontextmanager
async def serving(add: Callable[[grpc.aio.Server], None]) -> AsyncIterator[str]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _embed_server(servicer: FlakyEmbed) -> Callable[[grpc.aio.Server], None]:
    return lambda server: embed_pb2_grpc.add_EmbedServiceServicer_to_server(servicer, server)


def _scraper_server(servicer: FlakyScraper) -> Callable[[grpc.aio.Server], None]:
    return lambda server: scraper_pb2_grpc.add_ScraperServiceServicer_to_server(servicer, server)


async def test_the_channel_itself_retries_unavailable_even_for_a_large_request() -> None:
    flaky = FlakyEmbed(failures=2)
    async with serving(_embed_server(flaky)) as target:
        channel = embed_channel(target, retries=2, reconnect_backoff_max_ms=300)
        try:
            # A bare stub on the gateway's channel: the policy is the channel's, not a client loop's.
            reply = await embed_pb2_grpc.EmbedServiceStub(channel).Embed(
                embed_pb2.EmbedRequest(model="clip", images=[BIG_IMAGE]), timeout=10)
        finally:
            await channel.close()
    assert flaky.attempts == 3
    assert reply.provenance.model == "clip"


async def test_the_embed_client_gets_the_vectors_and_provenance_after_retries() -> None:
    flaky = FlakyEmbed(failures=1, code=grpc.StatusCode.RESOURCE_EXHAUSTED)  # a full queue: retried
    async with serving(_embed_server(flaky)) as target:
        client = EmbedClient(embed_channel(target, retries=2, reconnect_backoff_max_ms=300), timeout_s=10)
        try:
            reply = await client.embed("clip", [BIG_IMAGE, b"x"])
        finally:
            await client.channel.close()
    assert flaky.attempts == 2
    assert reply.vectors.shape == (2, 2) and reply.provenance.weights == "random"


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (2, 3)])
async def test_retries_stop_at_the_configured_attempts_with_a_plain_503(retries: int, attempts: int) -> None:
    flaky = FlakyEmbed(failures=100)
    async with serving(_embed_server(flaky)) as target:
        client = EmbedClient(embed_channel(target, retries=retries, reconnect_backoff_max_ms=300), timeout_s=10)
        try:
            with pytest.raises(BackendUnavailable) as caught:
                await client.embed("clip", [b"x"])
        finally:
            await client.channel.close()
    assert flaky.attempts == attempts
    assert caught.value.message == "The embed server is unavailable; try again shortly."
    assert "attempt" not in caught.value.message  # the servicer's words stay in the log detail


async def test_a_refused_request_is_not_retried() -> None:
    flaky = FlakyEmbed(failures=100, code=grpc.StatusCode.INVALID_ARGUMENT)
    async with serving(_embed_server(flaky)) as target:
        client = EmbedClient(embed_channel(target, retries=4, reconnect_backoff_max_ms=300), timeout_s=10)
        try:
            with pytest.raises(BackendRejected):
                await client.embed("clip", [b"x"])
        finally:
            await client.channel.close()
    assert flaky.attempts == 1


async def test_a_candidate_stream_is_retried_before_its_first_candidate() -> None:
    flaky = FlakyScraper(failures=1)
    async with serving(_scraper_server(flaky)) as target:
        client = ScraperClient(scraper_channel(target, retries=2, reconnect_backoff_max_ms=300), timeout_s=10)
        try:
            urls = [c.url async for c in client.search("rose tattoo", 10)]
        finally:
            await client.channel.close()
    assert flaky.attempts == 2
    assert urls == [f"https://img.example/{i}.jpg" for i in range(3)]


async def test_a_candidate_stream_that_failed_after_a_candidate_is_not_retried() -> None:
    flaky = FlakyScraper(fail_after=1)
    async with serving(_scraper_server(flaky)) as target:
        client = ScraperClient(scraper_channel(target, retries=4, reconnect_backoff_max_ms=300), timeout_s=10)
        received = []
        try:
            with pytest.raises(BackendUnavailable):
                async for candidate in client.search("rose tattoo", 10):
                    received.append(candidate.url)
        finally:
            await client.channel.close()
    # A6: the call was committed by its first message; a retry would repeat the candidates.
    assert flaky.attempts == 1
    assert received == ["https://img.example/0.jpg"]


def test_the_service_config_names_the_services_and_stays_within_grpc_limits() -> None:
    config = json.loads(service_config([EMBED_SERVICE], retries=10))
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "tattoo_search.v1.EmbedService"}]
    policy = method["retryPolicy"]
    assert policy["maxAttempts"] == MAX_ATTEMPTS_CAP
    assert set(policy["retryableStatusCodes"]) >= {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
    assert "INVALID_ARGUMENT" not in policy["retryableStatusCodes"]
    # No retries asked: no policy at all (gRPC refuses maxAttempts below 2).
    assert "methodConfig" not in json.loads(service_config([EMBED_SERVICE], retries=0))

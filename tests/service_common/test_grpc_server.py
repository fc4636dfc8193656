"""The server shape both gRPC services share (service_common/grpc_server.py): health and
reflection for every service, bind errors naming the variables, message limits, and the
graceful stop, driven by a tiny servicer whose calls wait at a gate the test opens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service_common.grpc_server import GrpcServer, Service, create_server
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc, scraper_pb2, scraper_pb2_grpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
SCRAPER = "tattoo_search.v1.ScraperService"
EMBED = "tattoo_search.v1.EmbedService"


class Gated(scraper_pb2_grpc.ScraperServiceServicer, embed_pb2_grpc.EmbedServiceServicer):
    """A stream (Search) and a unary call (ListModels) that wait for `gate` once entered."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0
        self.all_entered = asyncio.Event()
        self.expected = 2
        self.cancelled = 0

    async def _wait(self) -> None:
        self.entered += 1
        if self.entered == self.expected:
            self.all_entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def Search(  # noqa: N802 - the name comes from the proto
        self, request: scraper_pb2.SearchRequest, context: object
    ) -> AsyncIterator[scraper_pb2.Candidate]:
        await self._wait()
        yield scraper_pb2.Candidate(image_url=f"http://example.test/{request.query}.png")

    async def ListModels(  # noqa: N802 - the name comes from the proto
        self, request: embed_pb2.ListModelsRequest, context: object
    ) -> embed_pb2.ListModelsResponse:
        await self._wait()
        return embed_pb2.ListModelsResponse()


async def _start(servicer: Gated, port: int = 0, **options: object) -> tuple[GrpcServer, int]:
    return await create_server(
        [
            Service(SCRAPER, servicer, scraper_pb2_grpc.add_ScraperServiceServicer_to_server),
            Service(EMBED, servicer, embed_pb2_grpc.add_EmbedServiceServicer_to_server),
        ],
        host="127.0.0.1",
        port=port,
        env_prefix="TEST_",
        **options,  # type: ignore[arg-type]
    )


async def _status(channel: grpc.aio.Channel, name: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return reply.status


async def test_health_and_reflection_cover_every_service_and_extra_name() -> None:
    server, port = await _start(Gated(), serving=False, health_names=[f"{EMBED}/clip"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in ("", SCRAPER, EMBED, f"{EMBED}/clip"):
                assert await _status(channel, name) == NOT_SERVING, name
            await server.set_serving(f"{EMBED}/clip", True)
            assert await _status(channel, f"{EMBED}/clip") == SERVING
            assert await _status(channel, "") == NOT_SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
            names = {s.name for s in replies[0].list_services_response.service}
            assert {SCRAPER, EMBED, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    finally:
        await server.stop(0)


async def test_stop_lets_calls_in_flight_finish_while_health_says_not_serving() -> None:
    servicer = Gated()
    released: list[str] = []

    async def on_stop() -> None:
        released.append("released")

    server, port = await _start(servicer, health_names=[f"{EMBED}/clip"], on_stop=on_stop)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        search = scraper_pb2_grpc.ScraperServiceStub(channel).Search(
            scraper_pb2.SearchRequest(query="rose"), timeout=60
        )
        listing = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=60)
        reading = asyncio.ensure_future(_collect(search))
        await asyncio.wait_for(servicer.all_entered.wait(), 30)

        stopping = asyncio.ensure_future(server.stop(60))
        while await _status(channel, "") == SERVING:  # until the stop task has begun
            await asyncio.sleep(0.01)
        for name in ("", SCRAPER, EMBED, f"{EMBED}/clip"):
            assert await _status(channel, name) == NOT_SERVING, name
        await server.set_serving("", True)  # a late report (a model that just loaded) cannot undo it
        assert await _status(channel, "") == NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (refused.value.details() or "")
        assert not stopping.done() and released == []  # the two calls are still held

        servicer.gate.set()
        assert await reading == ["http://example.test/rose.png"]
        assert isinstance(await listing, embed_pb2.ListModelsResponse)
        await stopping
        await server.stop(60)  # a second stop waits for the first, and releases nothing twice
    assert released == ["released"]
    assert servicer.cancelled == 0


async def test_calls_still_running_when_the_grace_ends_are_cancelled() -> None:
    servicer = Gated()
    servicer.expected = 1
    released: list[str] = []

    async def on_stop() -> None:
        released.append("released")

    server, port = await _start(servicer, on_stop=on_stop)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        listing = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=60)
        waiting = asyncio.ensure_future(listing)
        await asyncio.wait_for(servicer.all_entered.wait(), 30)
        await server.stop(0.05)  # the gate never opens
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await waiting
    assert ended.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert servicer.cancelled == 1
    assert released == ["released"]


async def test_a_busy_port_names_the_variables() -> None:
    server, port = await _start(Gated())
    try:
        with pytest.raises(OSError, match=r"TEST_HOST, TEST_PORT"):
            await _start(Gated(), port=port)
    finally:
        await server.stop(0)


async def test_requests_above_the_receive_limit_are_refused() -> None:
    servicer = Gated()
    servicer.gate.set()
    server, port = await _start(servicer, max_receive_bytes=1024)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scraper_pb2_grpc.ScraperServiceStub(channel)
            assert await _collect(stub.Search(scraper_pb2.SearchRequest(query="rose"), timeout=10)) == [
                "http://example.test/rose.png"
            ]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _collect(stub.Search(scraper_pb2.SearchRequest(query="x" * 2000), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)


async def _collect(call: grpc.aio.UnaryStreamCall) -> list[str]:  # type: ignore[type-arg]
    return [candidate.image_url async for candidate in call]


async def test_a_stop_with_nothing_in_flight_reports_a_clean_stop(caplog: pytest.LogCaptureFixture) -> None:
    server, _ = await _start(Gated())
    with caplog.at_level("INFO", logger="service_common.grpc_server"):
        await server.stop(0)
    assert "every call in flight finished" in caplog.text
    assert "cancelling" not in caplog.text


async def _state_after_first_call(max_connection_age_s: float) -> grpc.ChannelConnectivity:
    """The channel's state once a call has connected it and 1.5 s have passed."""
    server, port = await _start(Gated(), max_connection_age_s=max_connection_age_s)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _status(channel, "") == SERVING
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.5
            state = channel.get_state()
            while loop.time() < until and state is grpc.ChannelConnectivity.READY:
                await asyncio.sleep(0.05)
                state = channel.get_state()
            return state
    finally:
        await server.stop(0)


async def test_a_connection_age_limit_makes_clients_reconnect() -> None:
    # Clients that balance over a DNS name re-resolve it only when a connection closes:
    # the age limit is what lets them find replicas added since they connected.
    assert await _state_after_first_call(0.3) is not grpc.ChannelConnectivity.READY
    # Without it the connection stays up (the same wait, so the test can tell them apart).
    assert await _state_after_first_call(0.0) is grpc.ChannelConnectivity.READY

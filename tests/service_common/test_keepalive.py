"""Keepalive pings between the gateway's channels and the gRPC servers
(service_common/keepalive.py): a channel left idle for many ping intervals keeps its
connection, where a server with gRPC's defaults closes it with GOAWAY "too_many_pings".

Both ends get a short interval through the one `Keepalive` they share (gRPC's client
pings at most once a second, so the pings come once a second). Two channels run side by
side, one to a server built by `create_server`, one to a bare gRPC server (what
`create_server` built before it took the keepalive options): the bare one's GOAWAY shows
the pings really went out, often enough to be refused, and the channel to the real
server must have stayed READY all that time.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs 1.53 predates it

from search_gateway.clients.channels import open_channel
from service_common.keepalive import Keepalive
from tests.service_common.test_grpc_server import SCRAPER, Gated, _start

SHORT = Keepalive(time_ms=200, timeout_ms=5_000)


class StateLog:
    """Every connectivity state a channel goes through from READY on."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.states: list[grpc.ChannelConnectivity] = []
        self.left_ready = asyncio.Event()
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        state = self.channel.get_state()
        assert state == grpc.ChannelConnectivity.READY
        while True:
            await self.channel.wait_for_state_change(state)
            state = self.channel.get_state()
            self.states.append(state)
            self.left_ready.set()

    def close(self) -> None:
        self._task.cancel()


async def _bare_server() -> tuple[grpc.aio.Server, int]:
    """A gRPC server with gRPC's own keepalive policy, answering health only."""
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SCRAPER):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _gateway_channel(port: int) -> grpc.aio.Channel:
    # The gateway's own channel (channels.open_channel), health-checked as the scraper's is.
    return open_channel(f"127.0.0.1:{port}", services=[SCRAPER], retries=0, reconnect_backoff_max_ms=1000,
                        health_service=SCRAPER, keepalive=SHORT)


async def _check(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SCRAPER), timeout=5)
    return reply.status


# Slow: waits through many keepalive periods (seconds, by design).
@pytest.mark.slow
async def test_idle_channel_keeps_its_connection_through_many_keepalive_pings() -> None:
    server, port = await _start(Gated(), keepalive=SHORT)
    bare, bare_port = await _bare_server()
    channel, control = _gateway_channel(port), _gateway_channel(bare_port)
    try:
        for each in (channel, control):
            await _check(each)  # connected and READY, then idle from here on
        watched, watched_control = StateLog(channel), StateLog(control)

        # gRPC's default server refuses the 2nd ping onwards and closes on the 3rd
        # strike: a few seconds of pings. Waiting for that GOAWAY (the channel leaves
        # READY) proves the pings went out, then a few more intervals go by.
        await asyncio.wait_for(watched_control.left_ready.wait(), 30)
        await asyncio.sleep(2)

        assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert watched.states == [], f"the channel went through {watched.states}: its connection was closed"
        watched.close()
        watched_control.close()
    finally:
        await channel.close()
        await control.close()
        await bare.stop(0)
        await server.stop(0)

"""Slow and greedy clients against the real gateway under uvicorn, over real loopback sockets.

The gateway is served through ``server.uvicorn_config`` (what ``python -m search_gateway``
uses), and one test runs ``python -m search_gateway`` itself. Deadlines are short here;
``GUARD`` only stops a test that would otherwise hang on the old code, it measures nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from search_gateway.config import GatewaySettings
from search_gateway.server import ClientLimits, ConnectionCounts, uvicorn_config
from tests.support.gateway_support import RunningGateway, run_gateway
from tests.support.serving import protocol_of

GUARD = 15.0  # seconds before a test gives up waiting for the server to act
ROOT = Path(__file__).resolve().parents[2]
# Nothing listens there: these tests never reach the backends (only /health, /metrics
# and requests that fail before any backend call).
NOWHERE = "127.0.0.1:9"
SLOW_HEADERS = b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 4000
HEALTH = b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"


def settings(**overrides: object) -> GatewaySettings:
    base = GatewaySettings(port=0, embed_target=NOWHERE, scraper_target=NOWHERE, rate_limit_per_minute=0,
                           header_timeout_s=0.5, body_idle_timeout_s=0.5, max_connections_per_client=64)
    return base.replace(**overrides)


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with run_gateway(settings()) as gw:
        yield gw


async def connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), GUARD)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {GUARD} s")
    except ConnectionResetError:
        return b""


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, every_s: float) -> bytes:
    """Send ``data`` a byte at a time, one every ``every_s``, until the server answers or
    closes; returns all it sent before closing."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + GUARD
    try:
        for i in range(len(data)):
            if loop.time() > give_up:
                pytest.fail(f"the server still read a byte every {every_s} s after {GUARD} s")
            writer.write(data[i:i + 1])
            await writer.drain()
            try:
                first = await asyncio.wait_for(reader.read(65536), every_s)
            except TimeoutError:
                continue
            return first + await until_closed(reader)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    pytest.fail("the server read all the slow headers without answering")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    return status, await reader.readexactly(length)


def is_408_or_nothing(answer: bytes) -> bool:
    return answer == b"" or (answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the server's event loop to catch up with what the sockets did."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + GUARD
    while not condition():
        if loop.time() > give_up:
            pytest.fail("the server's state never got there")
        await asyncio.sleep(0.01)


# --- headers


async def test_headers_dripped_slower_than_the_deadline_get_408_and_a_close(gateway: RunningGateway) -> None:
    reader, writer = await connect(gateway.port)
    answer = await drip(reader, writer, SLOW_HEADERS, every_s=0.1)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request_timeout"


async def test_a_connection_that_sends_nothing_is_closed(gateway: RunningGateway) -> None:
    reader, writer = await connect(gateway.port)
    assert await until_closed(reader) == b""  # nothing was asked, so nothing is answered
    writer.close()


async def test_a_slow_second_request_on_a_kept_alive_connection_is_timed_out_too(gateway: RunningGateway) -> None:
    # uvicorn's keep-alive timer stops at the first byte of the next request; the header
    # deadline has to take over from there.
    reader, writer = await connect(gateway.port)
    writer.write(HEALTH)
    assert (await read_response(reader))[0] == 200
    answer = await drip(reader, writer, SLOW_HEADERS, every_s=0.1)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_prompt_request_is_answered_and_a_slow_body_that_keeps_coming_is_not_cut() -> None:
    # Headers at once, then a body in small pieces for longer than both deadlines, but
    # never pausing longer than the idle deadline: read to the end and answered (a 400:
    # the JSON holds no query), not cut with a 408.
    async with run_gateway(settings(header_timeout_s=0.5, body_idle_timeout_s=2.0)) as gw:
        body = json.dumps({"text": ""}).encode() + b" " * 60
        reader, writer = await connect(gw.port)
        writer.write(b"POST /search HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 8):
            writer.write(body[i:i + 8])
            await writer.drain()
            await asyncio.sleep(0.1)
        status, answer = await read_response(reader)
        writer.close()
    assert status == 400 and json.loads(answer)["error"] != "request_timeout", answer


# --- bodies


async def test_a_body_that_stops_arriving_gets_408_and_a_close(gateway: RunningGateway) -> None:
    reader, writer = await connect(gateway.port)
    writer.write(b"POST /search HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b" " * 100)
    answer = await until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert "stalled" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]


async def test_a_body_still_owed_after_the_answer_is_closed_when_it_drips(gateway: RunningGateway) -> None:
    # 405 goes out without reading the body; the client then owes the rest of it. Each
    # byte it drips would reset uvicorn's keep-alive timer: the body deadline closes it
    # (no second answer).
    reader, writer = await connect(gateway.port)
    writer.write(b"POST /health HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
    status, _ = await read_response(reader)
    assert status == 405
    assert await drip(reader, writer, b"x" * 1000, every_s=1.0) == b""
    writer.close()


# --- connections per client address


async def test_connections_over_the_per_client_cap_are_refused_while_health_answers_others() -> None:
    async with run_gateway(settings(max_connections_per_client=3, header_timeout_s=60)) as gw:
        counts = protocol_of(gw).counts
        held = [await connect(gw.port) for _ in range(3)]
        await until(lambda: counts.of("127.0.0.1") == 3)

        reader, writer = await connect(gw.port)
        refused = await until_closed(reader)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 429 "), refused
        assert b"retry-after: 1" in refused.lower() and b'"too_many_connections"' in refused

        # Another address is not affected: /health answers on a fresh connection.
        reader, writer = await connect(gw.port, source="127.0.0.2")
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == 200
        writer.close()
        # The held connections still work.
        held[0][1].write(HEALTH)
        assert (await read_response(held[0][0]))[0] == 200

        for _, w in held:
            w.close()
        await until(lambda: counts.total == 0)
        # The address got its connections back: it may connect again.
        reader, writer = await connect(gw.port)
        writer.write(HEALTH)
        assert (await read_response(reader))[0] == 200
        writer.close()
        metrics = await _get(gw.port, "/metrics")
    assert 'gateway_slow_client_closes_total{kind="too_many_connections"} 1.0' in metrics


async def test_a_trusted_proxy_is_not_capped() -> None:
    # Behind a reverse proxy every client connects from its address: capping it would cap everyone.
    async with run_gateway(settings(max_connections_per_client=1, header_timeout_s=60,
                                      trusted_proxies=("127.0.0.3/32",))) as gw:
        counts = protocol_of(gw).counts
        proxied = [await connect(gw.port, source="127.0.0.3") for _ in range(3)]
        direct = await connect(gw.port)
        await until(lambda: counts.total == 4)
        over = await connect(gw.port)
        assert (await until_closed(over[0])).startswith(b"HTTP/1.1 429 ")
        for reader, writer in (*proxied, direct):
            writer.write(HEALTH)
            assert (await read_response(reader))[0] == 200
            writer.close()


async def test_the_count_goes_back_to_zero_on_every_way_a_connection_ends() -> None:
    async with run_gateway(settings(max_connections_per_client=2, header_timeout_s=2.0)) as gw:
        counts = protocol_of(gw).counts
        # 1: the client closes after an answer; 2: the client resets; 3: refused over the cap.
        r1, w1 = await connect(gw.port)
        w1.write(HEALTH)
        assert (await read_response(r1))[0] == 200
        reset = socket.socket()
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.connect(("127.0.0.1", gw.port))
        await until(lambda: counts.of("127.0.0.1") == 2)
        r3, w3 = await connect(gw.port)
        assert (await until_closed(r3)).startswith(b"HTTP/1.1 429 ")
        w3.close()
        w1.close()
        reset.close()  # SO_LINGER 0: an RST, not a FIN
        await until(lambda: counts.total == 0)

        # 4: header deadline; 5: body deadline; 6: "Connection: close" answered.
        r4, w4 = await connect(gw.port)
        r5, w5 = await connect(gw.port)
        w5.write(b"POST /search HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{")
        assert is_408_or_nothing(await until_closed(r4))
        assert (await until_closed(r5)).startswith(b"HTTP/1.1 408 ")
        w4.close()
        w5.close()
        r6, w6 = await connect(gw.port)
        w6.write(b"GET /health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        assert (await until_closed(r6)).startswith(b"HTTP/1.1 200 ")
        w6.close()
        await until(lambda: counts.total == 0)
        metrics = await _get(gw.port, "/metrics")
    # The scrape's own connection is the only one open while it is answered.
    assert "gateway_client_connections 1.0" in metrics
    assert 'gateway_slow_client_closes_total{kind="header_timeout"}' in metrics
    assert 'gateway_slow_client_closes_total{kind="body_timeout"} 1.0' in metrics


async def _get(port: int, path: str) -> str:
    reader, writer = await connect(port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n" % path.encode())
    status, body = await read_response(reader)
    writer.close()
    assert status == 200
    return body.decode()


# --- settings and the real entry point


def test_the_settings_reach_the_server_config() -> None:
    s = GatewaySettings.from_env({"GATEWAY_HEADER_TIMEOUT_S": "3.5", "GATEWAY_BODY_IDLE_TIMEOUT_S": "7",
                                  "GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "5"})
    config = uvicorn_config(object(), s)
    protocol = config.http  # the class itself; uvicorn loads it as is
    assert protocol.limits == ClientLimits(3.5, 7.0, 5)  # type: ignore[attr-defined]
    assert protocol.counts.cap == 5 and config.ws == "none" and config.proxy_headers is False  # type: ignore[attr-defined]


def test_zero_means_no_cap_on_connections() -> None:
    counts = ConnectionCounts(cap=0)
    assert all(counts.try_open("10.0.0.1") for _ in range(1000))
    counts.close("10.0.0.1")
    assert counts.of("10.0.0.1") == 999 and counts.total == 999


async def test_python_m_search_gateway_serves_with_the_deadlines() -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
           "GATEWAY_PORT": "0", "GATEWAY_EMBED_TARGET": NOWHERE, "GATEWAY_SCRAPER_TARGET": NOWHERE,
           "GATEWAY_HEADER_TIMEOUT_S": "0.5", "GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "search_gateway", cwd=ROOT, env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = 0
        assert proc.stderr is not None
        while not port:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, "python -m search_gateway exited before serving"
            found = re.search(rb"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else 0
        reader, writer = await connect(port)
        over_cap_reader, over_cap_writer = await connect(port)
        assert (await until_closed(over_cap_reader)).startswith(b"HTTP/1.1 429 ")
        over_cap_writer.close()
        answer = await drip(reader, writer, SLOW_HEADERS, every_s=0.1)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    finally:
        proc.terminate()
        await proc.wait()

"""Health, reflection, request validation and the ``python -m scraper_service`` entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from scraper_service.config import ScraperSettings
from scraper_service.server import SERVICE_NAME, create_server
from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import FakeWeb, collect

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
async def test_health_is_serving(web: FakeWeb, start_scraper, service: str) -> None:
    scraper = await start_scraper()
    health = health_pb2_grpc.HealthStub(scraper.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_service(web: FakeWeb, start_scraper) -> None:
    scraper = await start_scraper()
    reflection = reflection_pb2_grpc.ServerReflectionStub(scraper.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ]
    replies = [r async for r in reflection.ServerReflectionInfo(iter(requests), timeout=5)]

    names = {s.name for s in replies[0].list_services_response.service}
    assert {"tattoo_search.v1.ScraperService", "grpc.health.v1.Health"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto  # what grpcurl needs


@pytest.mark.parametrize(
    ("request_fields", "complaint"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": " \t\n "}, "query is empty"),
        ({"query": "x" * 300}, "limit is 256"),
        ({"query": "rose", "max_results": 1_000_000}, "max_results 1000000 is above"),
        ({"query": "rose", "min_results": 1_000_000}, "min_results 1000000 is above"),
        ({"query": "rose", "platforms": [scraper_pb2.PLATFORM_UNSPECIFIED]}, "platforms[0] is PLATFORM_UNSPECIFIED"),
        ({"query": "rose", "platforms": [scraper_pb2.PLATFORM_REDDIT, 42]}, "platforms[1] is 42"),
        # DuckDuckGo cannot search "other": no configured engine can serve the request.
        (
            {"query": "rose", "platforms": [scraper_pb2.PLATFORM_OTHER]},
            "no configured engine (duckduckgo) can search other",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument(
    web: FakeWeb, start_scraper, request_fields: dict, complaint: str
) -> None:
    scraper = await start_scraper()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(scraper.stub, **request_fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (caught.value.details() or "")
    assert web.calls == []


def _run_main(env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "scraper_service"],
        cwd=REPO,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_main_logs_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"url": "http://127.0.0.1:9/a.png"}\n')
    proc = _run_main({"SCRAPER_PORT": "0", "SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": str(manifest)})
    try:
        assert proc.stdout is not None
        line = ""
        for _ in range(50):  # bounded: a few log lines come before the address
            line = proc.stdout.readline()
            if "listening on" in line or not line:
                break
        assert "scraper listening on 127.0.0.1:" in line, line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SCRAPER_PORT": "http"}, "SCRAPER_PORT"),
        ({"SCRAPER_ENGINES": "duckduckgo,bing"}, "SCRAPER_ENGINES"),
        ({"SCRAPER_ENGINES": "catalog"}, "SCRAPER_CATALOG"),
        ({"SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": "/nonexistent/manifest.jsonl"}, "SCRAPER_CATALOG"),
        # A misspelt name is refused with the name meant, not ignored with a warning.
        ({"SCRAPER_PROT": "0"}, "unknown setting: SCRAPER_PROT (did you mean SCRAPER_PORT?)"),
    ],
)
def test_main_refuses_bad_settings_naming_the_key(env: dict[str, str], key: str) -> None:
    proc = _run_main(env)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert key in output
    assert "Traceback" not in output


async def test_a_busy_port_fails_at_start(web: FakeWeb, start_scraper) -> None:
    scraper = await start_scraper()
    with pytest.raises(OSError, match="SCRAPER_PORT"):
        await create_server(ScraperSettings(port=scraper.port))


_TRUNCATED_SEARCH = scraper_pb2.SearchRequest(query="rose tattoo", max_results=5).SerializeToString()[:-4]


@pytest.mark.parametrize(
    ("method", "streaming", "raw", "message"),
    [
        ("/tattoo_search.v1.ScraperService/Search", True, b"\xff\xff\xff\xff", "SearchRequest"),
        ("/tattoo_search.v1.ScraperService/Search", True, _TRUNCATED_SEARCH, "SearchRequest"),
        ("/grpc.health.v1.Health/Check", False, b"\x0a\x10abc", "HealthCheckRequest"),
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument(
    web: FakeWeb, start_scraper, method: str, streaming: bool, raw: bytes, message: str
) -> None:
    scraper = await start_scraper()
    # No serializer: the bytes go on the wire exactly as given.
    if streaming:
        call = scraper.channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [reply async for reply in call(raw, timeout=5)]
    else:
        unary = scraper.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(raw, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert f"the request is not a valid {message} message" in (caught.value.details() or "")
    assert web.calls == []


async def test_an_undecodable_message_in_a_request_stream_is_invalid_argument(web: FakeWeb, start_scraper) -> None:
    # Reflection is the one stream-stream method: a good request, then a broken one.
    scraper = await start_scraper()
    call = scraper.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    replies = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in call(iter([good, b"\x12\x40short"]), timeout=5):
            replies.append(reply)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert "the request is not a valid ServerReflectionRequest message" in (caught.value.details() or "")
    assert len(replies) == 1 and replies[0].list_services_response.service

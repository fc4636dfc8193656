"""Replies never show internals; every reply carries a request id that finds its log line.

A backend that is down makes gRPC say where it is and why it failed ("ipv4:127.0.0.1:50151:
Failed to connect ..."): that belongs in the log, with the request id, not in the reply.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings, image_form
from tests.support.gateway_support import run_gateway, scraper_server, write_catalog
from tests.support.images import jpeg

# Exception class names (AioRpcError, ConnectionRefusedError, InvalidUrlClientError ...)
# and gRPC's own words for a failed connection.
_INTERNAL = re.compile(r"ipv4:|ipv6:|\b\w*(Error|Exception)\b|Traceback|Failed to connect|UNKNOWN|UNAVAILABLE|/home/|/work/")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_clean(text: str, port: int) -> None:
    assert "127.0.0.1" not in text and str(port) not in text, text
    assert not _INTERNAL.search(text), text


def _logged_with(caplog: pytest.LogCaptureFixture, request_id: str, needle: str) -> list[logging.LogRecord]:
    """Records of this request that carry the detail the reply left out."""
    return [r for r in caplog.records
            if getattr(r, "request_id", None) == request_id and request_id in r.getMessage() and needle in r.getMessage()]


async def _call(http: aiohttp.ClientSession, method: str, url: str, request_id: str, **kwargs: Any) -> tuple[int, str, str]:
    async with http.request(method, url, headers={"X-Request-ID": request_id}, **kwargs) as resp:
        return resp.status, await resp.text(), resp.headers.get("X-Request-ID", "")


def _requests(site: Site) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, request arguments) for every route that asks a backend."""
    yield "POST", "/search", {"data": image_form(jpeg(1))}
    yield "POST", "/search", {"json": {"text": "rose tattoo"}}
    yield "POST", "/search/stream", {"data": image_form(jpeg(1))}
    yield "GET", "/models", {}
    yield "POST", f"/analyze-attention?candidate_url={site.base}/img/1.jpg", {"data": image_form(jpeg(2), field="query_file")}


async def test_backends_down_leave_no_trace_in_replies(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    embed_port, scraper_port = _closed_port(), _closed_port()
    settings = gateway_settings(f"127.0.0.1:{embed_port}", f"127.0.0.1:{scraper_port}", site, rpc_retries=0)
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        for i, (method, path, kwargs) in enumerate(_requests(site)):
            request_id = f"down-{i}"
            status, text, echoed = await _call(http, method, gw.url + path, request_id, **kwargs)
            _assert_clean(text, embed_port)
            _assert_clean(text, scraper_port)
            assert echoed == request_id, path
            # The stream's status line is sent before the search fails: the error is its last event.
            body = json.loads(text.splitlines()[-1]) if path == "/search/stream" else json.loads(text)
            assert (status, body["error"]) == ((200 if path == "/search/stream" else 503), "backend_unavailable"), text
            assert body["request_id"] == request_id
            assert "unavailable" in body["detail"]
            # The operator finds the address and gRPC's words under the same id.
            assert _logged_with(caplog, request_id, "127.0.0.1:"), path


async def test_scraper_down_leaves_no_trace_in_replies(embed: BackgroundServer, site: Site,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = _closed_port()
    settings = gateway_settings(embed.target, f"127.0.0.1:{port}", site, rpc_retries=0)
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        for i, (path, kwargs) in enumerate([("/search", {"data": image_form(jpeg(1))}),
                                            ("/search", {"json": {"text": "rose tattoo"}}),
                                            ("/search/stream", {"json": {"text": "rose tattoo"}})]):
            request_id = f"scraper-down-{i}"
            status, text, echoed = await _call(http, "POST", gw.url + path, request_id, **kwargs)
            _assert_clean(text, port)
            body = json.loads(text.splitlines()[-1])
            assert body["error"] == "backend_unavailable" and "scraper" in body["detail"], text
            assert echoed == body["request_id"] == request_id
            assert _logged_with(caplog, request_id, f"127.0.0.1:{port}"), path


async def test_download_failures_are_told_in_plain_words(embed: BackgroundServer, site: Site, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with scraper_server(write_catalog(tmp_path / "c.jsonl", site.good_urls(1))) as scraper:
        async with run_gateway(gateway_settings(embed.target, scraper.target, site)) as gw, aiohttp.ClientSession() as http:
            # The downloader's own message names the URL (and, for other failures, its library's error).
            url = f"{site.base}/missing.jpg"
            status, text, request_id = await _call(
                http, "POST", f"{gw.url}/analyze-attention?candidate_url={url}", "dl-1",
                data=image_form(jpeg(2), field="query_file"))
    body = json.loads(text)
    assert (status, body["error"]) == (502, "download_failed"), text
    _assert_clean(text, site.port)
    assert _logged_with(caplog, "dl-1", url)


@pytest.mark.parametrize(("sent", "kept"), [
    ("abc-123_X.y", True), ("a" * 64, True), ("a" * 65, False), ("two words", False), ("", False),
    ("semi;colon", False), ("ünïcode", False),
])
async def test_request_ids_on_every_reply_even_refusals(sent: str, kept: bool) -> None:
    settings = gateway_settings("127.0.0.1:1", "127.0.0.1:1", None, api_keys=("k1",),
                                rate_limit_per_minute=1, rate_limit_burst=1)
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        seen = []
        for headers, want in (({}, 401), ({"X-API-Key": "k1"}, 404), ({"X-API-Key": "k1"}, 429)):
            async with http.get(f"{gw.url}/thumbnails/x", headers={**headers, "X-Request-ID": sent}) as resp:
                body = await resp.json()
                assert resp.status == want
                assert resp.headers["X-Request-ID"] == body["request_id"]
                seen.append(body["request_id"])
        async with http.get(f"{gw.url}/health", headers={"X-Request-ID": sent}) as resp:
            seen.append(resp.headers["X-Request-ID"])
    for request_id in seen:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", request_id)
        assert (request_id == sent) is kept
    assert kept or len(set(seen)) == len(seen)  # generated ids differ per request

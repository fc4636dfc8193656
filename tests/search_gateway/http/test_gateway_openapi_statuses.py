"""The refusals that come before any route (issue 19, item 16): every operation of the
served description lists them, and every operation really answers them.

The fuzzer (test_gateway_openapi_fuzz.py) sends what the description describes, so it
never sends two API keys or a body to a GET: the statuses those get were missing from the
description. Here each operation gets both, over real HTTP, with keys and the gallery on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.background import BackgroundServer
from tests.support.collections_support import A
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway

_PARAMS = {"name": "flash", "id": str(uuid.uuid4()), "token": "nothing"}
_OPEN = ("/health", "/ready", "/metrics")


async def _raw(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One request written by hand: a Content-Length the body never reaches, which no client
    library sends, is how a caller announces a body over the limit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, json.loads(body) if body.startswith(b"{") else {}
    finally:
        writer.close()


async def test_every_operation_lists_and_answers_the_ambiguous_key_400_and_the_body_limit_413(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async with http.get(f"{gw.url}/openapi.json", headers=A) as resp:
            assert resp.status == 200
            document = await resp.json()
        port = gw.port
        checked = 0
        for template, item in document["paths"].items():
            path = template.format(**_PARAMS)
            for method, operation in item.items():
                label = f"{method.upper()} {template}"
                responses = operation["responses"]
                # A body over the limit, announced by Content-Length: refused before the route.
                status, body = await _raw(port, method.upper(), path,
                                          {**A, "Content-Type": "application/octet-stream",
                                           "Content-Length": str(10**12)})
                assert status == 413 and body["error"] == "upload_too_large", (label, status, body)
                assert "413" in responses, f"{label} answers 413 but its description does not list it"
                if template in _OPEN:
                    assert "security" not in operation, label
                    continue
                # Two different keys: refused before the route, on every route that needs a key.
                status, body = await _raw(port, method.upper(), path,
                                          {**A, "Authorization": "Bearer key-b", "Content-Length": "0"})
                assert status == 400 and body["error"] == "ambiguous_api_key", (label, status, body)
                assert "400" in responses, f"{label} answers 400 but its description does not list it"
                assert operation["security"], label
                checked += 1
        assert checked >= 12, checked  # the search, thumbnail and collection operations
        listing = document["paths"]["/collections/{name}/images"]
        cursor = next(p for p in listing["get"]["parameters"] if p["name"] == "cursor")["schema"]
        assert "pattern" in cursor  # an empty cursor= breaks the schema: the fuzzer sends it as invalid
        assert "text fields" in listing["post"]["responses"]["413"]["description"]

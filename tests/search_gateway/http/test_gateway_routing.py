"""Every path's 405 lists every method the path takes (issue 19, item 12).

Two Starlette routes for one path each answered a method neither takes with only their
own methods: PUT /collections said "Allow: GET, HEAD" though POST creates a collection.
The test walks every route the app registers, so a path added later is checked too.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import aiohttp
from starlette.routing import Mount, Route

from search_gateway.app import create_app
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import run_gateway

# A value for each path parameter: routing, not the handler, answers a wrong method.
_PARAMS = {"name": "flash", "id": str(uuid.uuid4()), "token": "nothing"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _registered(app: Any) -> dict[str, set[str]]:
    """Each concrete path to request, and the union of the methods registered for its template."""
    methods: dict[str, set[str]] = defaultdict(set)
    for route in app.routes:
        if isinstance(route, Route):
            methods[route.path.format(**_PARAMS)] |= set(route.methods or ())
        elif isinstance(route, Mount):  # the page's files: StaticFiles takes GET and HEAD
            methods[route.path + "/app.css"] |= {"GET", "HEAD"}
    return methods


async def test_every_paths_405_allows_every_method_registered_for_it() -> None:
    settings = gateway_settings("127.0.0.1:1", "127.0.0.1:1", None)  # no backend is asked
    expected = _registered(create_app(settings))
    assert expected["/collections"] == {"GET", "HEAD", "POST"}  # the walk sees both of its methods
    assert expected[f"/collections/flash/images/{_PARAMS['id']}"] == {"GET", "HEAD", "DELETE"}
    checked = 0
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        for path, allowed in sorted(expected.items()):
            for method in _METHODS:
                if method in allowed:
                    continue
                async with http.request(method, gw.url + path) as resp:
                    assert resp.status == 405, (method, path, resp.status)
                    said = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
                    assert said == allowed, f"{method} {path}: Allow {said}, registered {allowed}"
                    checked += 1
    assert checked > len(expected)


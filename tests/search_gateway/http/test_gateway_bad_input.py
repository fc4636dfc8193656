"""Inputs found by fuzzing that used to get a 5xx: each now gets its 4xx, naming what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from search_gateway.http.thumbnails import ThumbnailSigner
from tests.support.gateway_stack import Stack, image_form
from tests.support.images import jpeg

BAD_JSON_BODIES = [
    ('{"text": 5}', "text"),
    ('{"text": 1e400}', "text"),
    ('{"text": ["rose"]}', "text"),
    ('{"text": {"q": "rose"}}', "text"),
    ('{"text": true}', "text"),
    ('{"text": null}', "text"),
    ('{"text": "\\ud800 rose"}', "text"),
    ('{"text": "rose", "embedding_model": 7}', "embedding_model"),
    ('{"text": "rose", "embedding_model": "\\udfff"}', "embedding_model"),
    ('{"text": "rose", "max_results": "5"}', "max_results"),
    ('{"text": "rose", "max_results": 2.5}', "max_results"),
    ('{"text": "rose", "max_results": true}', "max_results"),
    ('{"text": "rose", "max_results": NaN}', "max_results"),
    ('{"text": "rose", "max_results": -Infinity}', "max_results"),
    ('{"text": "rose", "max_results": 100000000000000000000000000000}', "max_results"),
    ('{"text": "rose", "max_results": ' + "9" * 5000 + "}", "JSON"),
    ('{"text": "rose", "\\ud800": 1}', "\\ud800"),
    ('["rose"]', "object"),
    ('"rose"', "object"),
    ("[" * 100_000, "JSON"),
    ('{"text": "rose"', "JSON"),
]


@pytest.mark.parametrize(("body", "named"), BAD_JSON_BODIES, ids=[b[:40] for b, _ in BAD_JSON_BODIES])
@pytest.mark.parametrize("path", ["/search", "/search/stream"])
async def test_json_fields_of_the_wrong_type_get_400_naming_the_field(stack: Stack, path: str, body: str,
                                                                    named: str) -> None:
    async with stack.http.post(f"{stack.url}{path}", data=body.encode(),
                               headers={"Content-Type": "application/json"}) as resp:
        reply = await resp.json()
    assert (resp.status, reply["error"]) == (400, "bad_request"), reply
    assert named in reply["detail"], reply


async def test_json_text_search_with_every_field(stack: Stack) -> None:
    body = {"text": "rose tattoo", "embedding_model": "clip", "max_results": 2}
    async with stack.http.post(f"{stack.url}/search", json=body) as resp:
        reply = await resp.json()
    assert resp.status == 200, reply
    assert reply["embedding_model"] == "clip" and len(reply["results"]) == 2


# Loopback written the ways inet_aton and browsers read hosts, and a trailing-dot name.
LOOPBACK_SPELLINGS = ["127.1", "2130706433", "017700000001", "0177.0.0.1", "0", "127.000.000.002", "0x7f.0.0.1",
                      "127.0.0.1.", "localhost.", "LocalHost", "api.localhost"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_every_spelling_of_a_refused_address_is_refused(stack: Stack, host: str) -> None:
    url = f"http://{host}:{stack.site.internal_port}/secret-spelt"
    async with stack.http.post(f"{stack.url}/analyze-attention", params={"candidate_url": url},
                               data=image_form(jpeg(1), field="query_file")) as resp:
        reply = await resp.json()
    assert (resp.status, reply["error"]) == (400, "url_refused"), reply
    assert stack.site.hits.count("/secret") == 0


def _forged(secret: str, payload: bytes) -> str:
    """A token sealed with the secret around any payload, as the signer seals its own."""
    return ThumbnailSigner(secret, 60).seal(payload)


MALFORMED_PAYLOADS: list[Any] = [
    {"e": 4102444800}, {"u": 5, "h": {}, "e": 4102444800}, {"u": "http://x/a.jpg", "h": [1], "e": 4102444800},
    {"u": "http://x/a.jpg", "h": 5, "e": 4102444800}, {"u": "http://x/a.jpg", "h": {"a": 1}, "e": 4102444800},
    {"u": "http://x/a.jpg", "h": {}, "e": "later"}, {"u": "http://x/a.jpg", "h": {}}, ["u", "h", "e"], "text", 7, None,
]


@pytest.mark.parametrize("payload", MALFORMED_PAYLOADS, ids=[json.dumps(p)[:30] for p in MALFORMED_PAYLOADS])
def test_a_signed_but_malformed_thumbnail_payload_is_not_found(payload: Any) -> None:
    from search_gateway.errors import NotFound

    with pytest.raises(NotFound):
        ThumbnailSigner("s3cret", 60).verify(_forged("s3cret", json.dumps(payload).encode()))
    with pytest.raises(NotFound):
        ThumbnailSigner("s3cret", 60).verify(_forged("s3cret", b"\xff\xfe not json"))


async def test_thumbnail_route_answers_404_for_a_signed_malformed_payload(stack: Stack) -> None:
    secret = stack.gateway.app.state.settings.thumbnail_secret
    for payload in MALFORMED_PAYLOADS:
        async with stack.http.get(f"{stack.url}/thumbnails/{_forged(secret, json.dumps(payload).encode())}") as resp:
            reply = await resp.json()
        assert (resp.status, reply["error"]) == (404, "not_found"), (payload, reply)

"""Who a request counts against: configured keys and client addresses, never invented values."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.http.access import AmbiguousKey, ClientIdentity, caller_key
from tests.support.gateway_stack import gateway_settings
from tests.support.gateway_support import run_gateway

BURST = 10


def _scope(peer: str, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> dict[str, Any]:
    pairs = headers.items() if isinstance(headers, dict) else (headers or [])
    return {"type": "http", "client": (peer, 5000),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]}


async def _statuses(url: str, headers: list[dict[str, str]]) -> list[int]:
    """One request per header set to a cheap rate-limited route (an unknown thumbnail: 404)."""
    statuses = []
    async with aiohttp.ClientSession() as http:
        for h in headers:
            async with http.get(f"{url}/thumbnails/nothing", headers=h) as resp:
                statuses.append(resp.status)
    return statuses


def _limited(**overrides: Any) -> GatewaySettings:
    # No backend is asked: the route answers 404 or the rate limit answers 429.
    return gateway_settings("127.0.0.1:1", "127.0.0.1:1", None, rate_limit_per_minute=1,
                            rate_limit_burst=BURST, **overrides)


async def test_invented_api_keys_share_the_callers_bucket() -> None:
    async with run_gateway(_limited()) as gw:
        statuses = await _statuses(gw.url, [{"X-API-Key": f"invented-{i}"} for i in range(40)])
    assert statuses.count(404) == BURST and statuses.count(429) == 40 - BURST


async def test_a_configured_key_gets_its_own_bucket() -> None:
    async with run_gateway(_limited(api_keys=("k1", "k2"))) as gw:
        first = await _statuses(gw.url, [{"X-API-Key": "k1"}] * (BURST + 1))
        second = await _statuses(gw.url, [{"Authorization": "Bearer k2"}])
    assert first == [404] * BURST + [429] and second == [404]


async def test_forwarded_headers_count_only_from_a_trusted_proxy() -> None:
    spoofed = [{"X-Forwarded-For": f"198.51.100.{i}", "Forwarded": f"for=198.51.100.{i}"} for i in range(40)]
    async with run_gateway(_limited()) as gw:  # no trusted proxies: the loopback peer is the client
        statuses = await _statuses(gw.url, spoofed)
    assert statuses.count(404) == BURST
    async with run_gateway(_limited(trusted_proxies=("127.0.0.0/8",))) as gw:  # the test client is the proxy
        distinct = await _statuses(gw.url, [{"X-Forwarded-For": f"198.51.100.{i}"} for i in range(2 * BURST)])
        # The client prepends whatever it likes; the proxy appends what it saw.
        one_client = await _statuses(gw.url, [{"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.7"} for i in range(BURST + 1)])
        rfc7239 = await _statuses(gw.url, [{"Forwarded": f'for=10.0.0.{i};proto=https, for="[2001:db8::7]:4711"'}
                                           for i in range(BURST + 1)])
    assert distinct == [404] * (2 * BURST)
    assert one_client == [404] * BURST + [429]
    assert rfc7239 == [404] * BURST + [429]


@pytest.mark.parametrize(("peer", "headers", "expected"), [
    ("203.0.113.1", {"X-Forwarded-For": "198.51.100.1"}, "203.0.113.1"),  # peer not trusted: header ignored
    ("10.0.0.2", {"X-Forwarded-For": "198.51.100.1"}, "198.51.100.1"),
    ("10.0.0.2", {"X-Forwarded-For": "1.1.1.1, 198.51.100.1, 10.0.0.3"}, "198.51.100.1"),  # skip trusted hops
    ("10.0.0.2", [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "198.51.100.1")], "198.51.100.1"),
    ("10.0.0.2", {"X-Forwarded-For": "198.51.100.1:8443"}, "198.51.100.1"),
    ("10.0.0.2", {"X-Forwarded-For": "[2001:db8::1]:8443"}, "2001:db8::1"),
    ("10.0.0.2", {"X-Forwarded-For": "10.0.0.9, 10.0.0.3"}, "10.0.0.9"),  # all trusted: the first hop
    ("10.0.0.2", {"Forwarded": 'for="[2001:DB8::17]:4711"'}, "2001:db8::17"),
    ("10.0.0.2", {"Forwarded": 'for=1.1.1.1;by=x, for=198.51.100.2;proto=https'}, "198.51.100.2"),
    ("10.0.0.2", {"Forwarded": 'for="1.1.1.1, 2.2.2.2";proto=http, for=198.51.100.3'}, "198.51.100.3"),
    ("10.0.0.2", {"Forwarded": "for=unknown"}, "node:unknown"),
    ("10.0.0.2", {"Forwarded": "for=1.1.1.1", "X-Forwarded-For": "198.51.100.4"}, "198.51.100.4"),
    ("10.0.0.2", {}, "10.0.0.2"),
    ("::ffff:10.0.0.2", {"X-Forwarded-For": "198.51.100.5"}, "198.51.100.5"),  # dual-stack peer
])
def test_the_client_address_behind_trusted_proxies(peer: str, headers: Any, expected: str) -> None:
    identity = ClientIdentity(trusted_proxies=("10.0.0.0/24",))
    assert identity.address(_scope(peer, headers)) == expected


def test_only_configured_keys_pick_a_bucket() -> None:
    identity = ClientIdentity(keys=("k1",))
    assert identity.key(_scope("203.0.113.1", {"X-API-Key": "k1"})) == "key:k1"
    assert identity.key(_scope("203.0.113.1", {"X-API-Key": "k9"})) == "ip:203.0.113.1"
    assert ClientIdentity().key(_scope("203.0.113.1", {"X-API-Key": "k1"})) == "ip:203.0.113.1"


def test_trusted_proxies_setting_is_checked() -> None:
    assert GatewaySettings.from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12, ::1"}).trusted_proxies == (
        "10.0.0.1", "172.16.0.0/12", "::1")
    with pytest.raises(ConfigError, match="GATEWAY_TRUSTED_PROXIES"):
        GatewaySettings.from_env({"GATEWAY_TRUSTED_PROXIES": "proxy.internal"})


# Issue 19, item 9: one function decides the caller's key, for the key check and the rate limiter.
AMBIGUOUS = [
    [("X-API-Key", "k1"), ("X-API-Key", "k2")],  # two lines: the first used to win
    [("X-API-Key", "k1, k2")],  # the same, folded into one line by a proxy
    [("X-API-Key", "k1"), ("Authorization", "Bearer k2")],  # the header used to win
    [("Authorization", "Bearer k2"), ("X-API-Key", "k1")],
    [("X-API-Key", "nobody"), ("X-API-Key", "k1")],  # an invented key before a real one
]
SAME_KEY_TWICE = [
    [("X-API-Key", "k1"), ("X-API-Key", "k1")],
    [("X-API-Key", "k1"), ("Authorization", "Bearer k1")],
    [("X-API-Key", ""), ("Authorization", "bearer k1")],  # an empty header names no key
]


@pytest.mark.parametrize("headers", AMBIGUOUS)
def test_two_different_keys_are_no_key_for_the_rate_limiter_either(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(AmbiguousKey):
        caller_key(_scope("203.0.113.1", headers))
    # The limiter never counts such a request against either key (the key check refuses it first).
    assert ClientIdentity(keys=("k1", "k2")).key(_scope("203.0.113.1", headers)) == "ip:203.0.113.1"


@pytest.mark.parametrize("headers", SAME_KEY_TWICE)
def test_the_same_key_given_twice_is_that_key(headers: list[tuple[str, str]]) -> None:
    assert caller_key(_scope("203.0.113.1", headers)) == "k1"
    assert ClientIdentity(keys=("k1",)).key(_scope("203.0.113.1", headers)) == "key:k1"


async def _answers(url: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}", headers=CIMultiDict(headers)) as resp:
        return resp.status, await resp.json() if resp.content_type == "application/json" else None


async def test_ambiguous_credentials_are_refused_and_one_key_given_twice_is_accepted() -> None:
    async with run_gateway(gateway_settings("127.0.0.1:1", "127.0.0.1:1", None, api_keys=("a:k1", "b:k2"))) as gw:
        for headers in AMBIGUOUS:
            status, body = await _answers(gw.url, "/thumbnails/nothing", headers)
            assert status == 400, (headers, status, body)
            assert body["error"] == "ambiguous_api_key" and "one key once" in body["detail"], body
        for headers in SAME_KEY_TWICE:  # admitted as k1: the route itself answers (404)
            assert (await _answers(gw.url, "/thumbnails/nothing", headers))[0] == 404, headers
        # Probes need no key: two keys there are ignored, not refused.
        assert (await _answers(gw.url, "/health", AMBIGUOUS[0]))[0] == 200

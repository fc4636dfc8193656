"""Pure units: settings, the address policy, signing, rate buckets, caption parsing, cache."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.errors import NotFound
from search_gateway.fetch.netguard import is_public_address, parse_allowlist, permitted
from search_gateway.http.access import TokenBuckets
from search_gateway.http.thumbnails import ThumbnailSigner
from search_gateway.search.cache import EmbeddingCache
from search_gateway.search.caption import compose_query, parse_remote_answer


def test_settings_from_env_parse_and_name_the_bad_key() -> None:
    s = GatewaySettings.from_env({"GATEWAY_PORT": "9000", "GATEWAY_FETCH_ALLOW": "127.0.0.1:8080, 10.0.0.0/8",
                                  "GATEWAY_SEARCH_BUDGET_S": "4.5", "GATEWAY_CORS_ORIGINS": "https://a,https://b"})
    assert (s.port, s.search_budget_s, s.cors_origins) == (9000, 4.5, ("https://a", "https://b"))
    assert s.fetch_allow == ("127.0.0.1:8080", "10.0.0.0/8")
    for env, key in [({"GATEWAY_PORT": "x"}, "GATEWAY_PORT"), ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
                     ({"GATEWAY_DEFAULT_MODEL": "resnet"}, "GATEWAY_DEFAULT_MODEL"),
                     ({"GATEWAY_FETCH_ALLOW": "10.0.0.0/33"}, "GATEWAY_FETCH_ALLOW"),
                     ({"GATEWAY_CAPTION_MODE": "remote"}, "GATEWAY_CAPTION_URL"),
                     ({"GATEWAY_MAX_REDIRECTS": "9"}, "GATEWAY_MAX_REDIRECTS"),
                     ({"GATEWAY_SERCH_BUDGET_S": "1"}, "GATEWAY_SERCH_BUDGET_S")]:
        with pytest.raises(ConfigError, match=key):
            GatewaySettings.from_env(env)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "::", "fe80::1", "fc00::1", "fec0::1",
    "ff0e::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::",
    "2002:a00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_allowlist_admits_only_what_it_names() -> None:
    allow = parse_allowlist(["127.0.0.1:8080", "demo.local", "10.9.0.0/16", "[::1]:81"])
    lo = ipaddress.ip_address("127.0.0.1")
    assert permitted("127.0.0.1", 8080, lo, allow)
    assert not permitted("127.0.0.1", 8081, lo, allow)
    assert permitted("demo.local", 1234, lo, allow)
    assert not permitted("localhost", 8081, lo, allow)
    assert permitted("x", 1, ipaddress.ip_address("10.9.3.4"), allow)
    assert not permitted("x", 1, ipaddress.ip_address("10.8.3.4"), allow)
    assert permitted("::1", 81, ipaddress.ip_address("::1"), allow)
    with pytest.raises(ValueError):
        parse_allowlist(["host:notaport"])


def test_thumbnail_tokens_are_signed_and_expire() -> None:
    now = [1000.0]
    signer = ThumbnailSigner("secret", ttl_s=60, clock=lambda: now[0])
    token = signer.sign("https://img.example/a.jpg", {"Referer": "https://www.pinterest.com/"})
    assert signer.verify(token) == ("https://img.example/a.jpg", {"Referer": "https://www.pinterest.com/"})
    with pytest.raises(NotFound):
        ThumbnailSigner("other-secret", 60, clock=lambda: now[0]).verify(token)
    with pytest.raises(NotFound):
        # Any change to the token (here: one character in its middle) fails its tag.
        middle = len(token) // 2
        signer.verify(token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:])
    now[0] += 61
    with pytest.raises(NotFound):
        signer.verify(token)


def test_token_buckets_allow_a_burst_then_say_how_long_to_wait() -> None:
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=2, clock=lambda: now[0])
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    wait = buckets.take("a")
    assert 0.9 <= wait <= 1.0
    assert buckets.take("b") == 0  # per client
    now[0] += 1.0
    assert buckets.take("a") == 0


@pytest.mark.parametrize(("content", "expected"), [
    ('{"query": "geometric mandala tattoo"}', "geometric mandala tattoo"),
    ('```json\n{"query": "koi   fish tattoo"}\n```', "koi fish tattoo"),
])
def test_remote_answers_parse_strictly(content: str, expected: str) -> None:
    assert parse_remote_answer(content) == expected


@pytest.mark.parametrize("content", [
    "geometric tattoo", '{"query": ""}', '{"q": "rose"}', '{"query": "rose", "note": "x"}', '["rose"]',
    '{"query": "<script>alert(1)</script>"}', '{"query": "' + "word " * 20 + '"}', '{"query": 3}',
])
def test_remote_answers_that_are_not_strict_json_are_refused(content: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_remote_answer(content)


def test_compose_query() -> None:
    assert compose_query("geometric", "wolf") == "geometric wolf tattoo"
    assert compose_query("mandala", "mandala") == "mandala tattoo"


def test_embedding_cache_is_bounded_and_keyed_by_model_hash_and_url() -> None:
    now = [0.0]
    lookups: list[bool] = []
    cache = EmbeddingCache(max_entries=2, ttl_s=10, clock=lambda: now[0], on_lookup=lookups.append)
    v = np.ones(4, dtype=np.float32)
    cache.put("clip", "h1", v, "http://a/1")
    cache.put("clip", "h2", v * 2, "http://a/2")
    assert cache.by_url("clip", "http://a/1") is not None
    assert cache.by_url("dinov2", "http://a/1") is None
    cache.put("clip", "h3", v * 3)
    assert len(cache) == 2 and cache.by_hash("clip", "h2") is None  # least recently used went first
    now[0] += 11
    assert cache.by_hash("clip", "h3") is None  # expired
    assert lookups.count(True) == 1 and lookups.count(False) == 3


def test_embedding_cache_keeps_each_vectors_provenance_and_ttl_0_never_expires() -> None:
    from search_gateway.clients.replies import Provenance

    now = [0.0]
    cache = EmbeddingCache(max_entries=4, ttl_s=0, clock=lambda: now[0])
    provenance = Provenance("clip", "random", "onnx", "cpu", "int8", "sha256:ab")
    cache.put("clip", "h1", np.ones(4, dtype=np.float32), "http://a/1", provenance)
    now[0] += 10**9
    hit = cache.by_url("clip", "http://a/1")
    assert hit is not None and hit[0] == "h1" and hit[1].provenance == provenance
    assert not hit[1].vector.flags.writeable  # shared between searches


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_candidates_pass_through_unless_cut_short(fmt: str) -> None:
    from search_gateway.errors import TruncatedImage
    from search_gateway.fetch.images import prepare
    from tests.support.images import encode, noise_image

    data = encode(noise_image(5, (120, 90)), fmt)
    prepared = prepare(data, max_pixels=10**7, short_side=448, full_check=False)
    assert prepared.embed_bytes is data and (prepared.width, prepared.height) == (120, 90)
    with pytest.raises(TruncatedImage):
        prepare(data[: len(data) * 3 // 4], max_pixels=10**7, short_side=448, full_check=False)


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"), ("127.000.000.002", "127.0.0.2"), ("0x7F.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("10.1.0x102", "10.1.1.2"), ("127.0.0.1.", "127.0.0.1"), ("localhost.", "127.0.0.1"), ("a.LOCALHOST", "127.0.0.1"),
    ("[::1]", "::1"), ("1.2.3.4.5", "0.0.0.0"), ("1.2.3.256", "0.0.0.0"), ("1.09.0.1", "0.0.0.0"),
])
def test_hosts_are_read_the_way_inet_aton_and_browsers_read_them(host: str, address: str) -> None:
    from search_gateway.fetch.netguard import parse_ip

    assert str(parse_ip(host)) == address


@pytest.mark.parametrize("host", ["example.com", "1.example", "example.com.", "cafe", "0x.example"])
def test_names_are_not_addresses(host: str) -> None:
    from search_gateway.fetch.netguard import is_canonical_ip, parse_ip

    assert parse_ip(host) is None and is_canonical_ip(host)


def test_non_canonical_addresses_are_refused_even_when_allowlisted_or_public() -> None:
    allow = parse_allowlist(["127.0.0.1:8080", "127.0.0.0/8"])
    lo = ipaddress.ip_address("127.0.0.1")
    assert permitted("127.0.0.1", 8080, lo, allow)
    for host in ("127.1", "2130706433", "127.0.0.1.", "0177.0.0.1"):
        assert not permitted(host, 8080, lo, allow)
    assert not permitted("134744072", 80, ipaddress.ip_address("8.8.8.8"), parse_allowlist([]))  # 8.8.8.8, spelt oddly
    assert permitted("8.8.8.8", 80, ipaddress.ip_address("8.8.8.8"), parse_allowlist([]))

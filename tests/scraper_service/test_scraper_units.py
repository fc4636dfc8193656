"""The small pure pieces: settings, URLs, query simplification, backoff delays, the cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scraper_service.cache import TTLCache
from scraper_service.config import ScraperSettings
from scraper_service.query import simplify_query
from scraper_service.retry import RetryPolicy
from scraper_service.urls import dedup_key, normalise_url
from service_common.settings import unknown_variables


def test_settings_defaults() -> None:
    s = ScraperSettings.from_env({})
    assert (s.host, s.port, s.engines, s.catalog) == ("127.0.0.1", 50052, ("duckduckgo",), None)
    assert (s.cache_ttl_s, s.max_results, s.min_results) == (3600.0, 50, 10)


def test_settings_from_env() -> None:
    s = ScraperSettings.from_env(
        {
            "SCRAPER_PORT": "6000",
            "SCRAPER_ENGINES": " DuckDuckGo , catalog ",
            "SCRAPER_CATALOG": "var/demo/manifest.jsonl",
            "SCRAPER_CACHE_TTL_S": "0",
            "SCRAPER_DDGS_SAFESEARCH": "OFF",
            "SCRAPER_HOST": "",  # empty means default
        }
    )
    assert (s.port, s.engines, s.catalog, s.cache_ttl_s) == (
        6000,
        ("duckduckgo", "catalog"),
        Path("var/demo/manifest.jsonl"),
        0,
    )
    assert (s.host, s.ddgs_safesearch, s.address) == ("127.0.0.1", "off", "127.0.0.1:6000")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SCRAPER_PORT": "fifty"}, "SCRAPER_PORT"),
        ({"SCRAPER_PORT": "70000"}, "SCRAPER_PORT"),
        ({"SCRAPER_ENGINES": "google"}, "SCRAPER_ENGINES"),
        ({"SCRAPER_ENGINES": ","}, "SCRAPER_ENGINES"),
        ({"SCRAPER_ENGINES": "catalog"}, "SCRAPER_CATALOG"),
        ({"SCRAPER_MAX_RESULTS": "501"}, "SCRAPER_MAX_RESULTS"),
        ({"SCRAPER_RETRY_ATTEMPTS": "0"}, "SCRAPER_RETRY_ATTEMPTS"),
        ({"SCRAPER_RETRY_BACKOFF_MAX_S": "0.1"}, "SCRAPER_RETRY_BACKOFF_MAX_S"),
        ({"SCRAPER_PLATFORM_TIMEOUT_S": "soon"}, "SCRAPER_PLATFORM_TIMEOUT_S"),
        ({"SCRAPER_DDGS_SAFESEARCH": "strict"}, "SCRAPER_DDGS_SAFESEARCH"),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ScraperSettings.from_env(env)


def test_unknown_keys_are_reported() -> None:
    env = {"SCRAPER_PROT": "1", "SCRAPER_PORT": "2", "HOME": "/"}
    assert unknown_variables(env, "SCRAPER_", ScraperSettings.variables().values()) == ["SCRAPER_PROT"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("HTTPS://Example.COM:443/a.png#x", "https://example.com/a.png"),
        ("http://example.com:8080/a.png?b=2&a=1&utm_source=x", "http://example.com:8080/a.png?a=1&b=2"),
        ("//cdn.example.com/a.png", "https://cdn.example.com/a.png"),
        ("https://example.com", "https://example.com/"),
        ("http://[::1]:80/a.png", "http://[::1]/a.png"),
        ("data:image/png;base64,AAAA", None),
        ("javascript:alert(1)", None),
        ("ftp://example.com/a.png", None),
        ("https://example.com:99999/a.png", None),
        ("   ", None),
    ],
)
def test_normalise_url(raw: str, clean: str | None) -> None:
    assert normalise_url(raw) == clean


def test_dedup_key_folds_known_variants() -> None:
    def key(url: str) -> str:
        clean = normalise_url(url)
        assert clean is not None
        return dedup_key(clean)

    assert key("https://i.pinimg.com/236x/ab/cd.jpg") == key("http://i.pinimg.com/originals/ab/cd.jpg")
    assert key("https://preview.redd.it/x.jpg?width=640&s=abc") == key("https://i.redd.it/x.jpg")
    assert key("https://www.example.com/a.png") == key("http://example.com/a.png")
    assert key("https://example.com/a.png?id=1") != key("https://example.com/a.png?id=2")


@pytest.mark.parametrize(
    ("query", "simple"),
    [
        ("Minimalist fine-line red rose tattoo", "rose tattoo"),
        ("traditional japanese koi fish tattoo sleeve", "koi fish tattoo"),
        ("small geometric wolf", "wolf"),
        ("black and grey", "black and grey"),  # nothing left: keep the original words
        ("rose tattoo", "rose tattoo"),
    ],
)
def test_simplify_query(query: str, simple: str) -> None:
    assert simplify_query(query) == simple


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_s=1.0, max_s=5.0)
    rng = random.Random(1)
    for retry, step in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(step <= d <= step * 1.5 for d in delays)
        assert max(delays) - min(delays) > step * 0.3  # there is jitter


def test_cache_ttl_and_lru() -> None:
    now = [0.0]
    cache: TTLCache[str, int] = TTLCache(ttl_s=10, max_size=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert len(cache) == 2
    now[0] = 10.0
    assert cache.get("a") is None  # expired exactly at the TTL
    # c was stored at the same moment, so it expired too: len() counts live entries only
    # (the hand-written cache counted c until a get() found it expired).
    assert (cache.hits, cache.misses, cache.evictions, len(cache)) == (3, 2, 1, 0)


def test_cache_disabled() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=0, max_size=10)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0

"""Streaming, fallback tiers, deduplication and max_results, through the real gRPC server."""

from __future__ import annotations

import threading

from scraper_service.platforms import SITE_DOMAINS
from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import FakeWeb, collect, ddgs_results, read_all

PIN, RED, INS = scraper_pb2.PLATFORM_PINTEREST, scraper_pb2.PLATFORM_REDDIT, scraper_pb2.PLATFORM_INSTAGRAM


async def test_first_candidate_arrives_before_the_slowest_platform_answers(web: FakeWeb, start_scraper) -> None:
    release = threading.Event()

    def slow_pinterest(query: str, n: int) -> list[dict]:
        assert release.wait(5), "the test never released Pinterest"
        return ddgs_results("pinterest.com", 2, "slow")

    web.on("pinterest.com", slow_pinterest)
    web.on("reddit.com", ddgs_results("reddit.com", 2, "fast"))
    scraper = await start_scraper(min_results=1)

    call = scraper.stub.Search(scraper_pb2.SearchRequest(query="rose tattoo"), timeout=10)
    try:
        first = await call.read()
        # Reddit's answer is on the wire while Pinterest is still inside its search call.
        assert first.platform == RED
        assert first.image_url == "https://i.redd.it/fast-0.jpg"
        (pinterest_call,) = web.calls_for("pinterest.com")
        assert pinterest_call.finished is None
    finally:
        release.set()
    rest = await read_all(call)

    assert [c.platform for c in [first, *rest]] == [RED, RED, PIN, PIN]
    slow = rest[-1]
    assert slow.image_url == "https://i.pinimg.com/736x/slow-1.jpg"
    assert slow.source_url == "https://www.pinterest.com/post/slow-1/"
    assert (slow.width, slow.height, slow.engine, slow.tier, slow.from_cache) == (800, 1200, "duckduckgo", 1, False)
    assert slow.query == "rose tattoo"
    assert {(h.name, h.value) for h in slow.request_headers} >= {("Referer", "https://www.pinterest.com/")}
    assert ("Referer", "https://www.reddit.com/") in {(h.name, h.value) for h in first.request_headers}


async def test_each_platform_gets_one_site_filtered_query(web: FakeWeb, start_scraper) -> None:
    scraper = await start_scraper()
    await collect(scraper.stub, query="koi fish", max_results=7, min_results=1)
    # Nothing found anywhere: tiers 1 and 2 ran, one call per platform, no tier 3
    # because "koi fish" has no style words to drop.
    assert sorted(c.domain for c in web.calls) == sorted(SITE_DOMAINS.values())
    for c in web.calls:
        assert c.query == "koi fish"
        assert c.kwargs["max_results"] == 7
        assert c.kwargs["backend"] == "duckduckgo"


async def test_tier_one_enough_skips_instagram(web: FakeWeb, start_scraper) -> None:
    web.on("pinterest.com", ddgs_results("pinterest.com", 2))
    web.on("reddit.com", ddgs_results("reddit.com", 2))
    web.on("instagram.com", ddgs_results("instagram.com", 2))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="traditional rose tattoo", min_results=4)

    assert len(results) == 4 and {c.tier for c in results} == {1}
    assert web.calls_for("instagram.com") == []


async def test_tier_two_adds_instagram_when_tier_one_is_short(web: FakeWeb, start_scraper) -> None:
    web.on("pinterest.com", ddgs_results("pinterest.com", 1))
    web.on("reddit.com", ddgs_results("reddit.com", 1))
    web.on("instagram.com", ddgs_results("instagram.com", 5))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="traditional rose tattoo", min_results=3)

    # Tier 1's results all come before tier 2's; tier 2 reached the threshold, so the
    # simplified tier 3 never ran.
    assert [c.tier for c in results] == [1, 1, 2, 2, 2, 2, 2]
    assert [c.platform for c in results][2:] == [INS] * 5
    assert len(web.calls_for("pinterest.com")) == 1
    assert len(web.calls_for("instagram.com")) == 1


async def test_tier_three_runs_a_simplified_query_on_every_platform(web: FakeWeb, start_scraper) -> None:
    def only_simple(domain: str):
        return lambda q, n: ddgs_results(domain, 2, domain.split(".")[0]) if q == "rose tattoo" else []

    for domain in SITE_DOMAINS.values():
        web.on(domain, only_simple(domain))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="Minimalist fine-line RED rose tattoo", min_results=10)

    assert len(results) == 6
    assert {c.tier for c in results} == {3}
    assert {c.query for c in results} == {"rose tattoo"}
    assert {c.platform for c in results} == {PIN, RED, INS}
    for domain in SITE_DOMAINS.values():
        assert [c.query for c in web.calls_for(domain)] == ["Minimalist fine-line RED rose tattoo", "rose tattoo"]


async def test_requested_platforms_restrict_every_tier(web: FakeWeb, start_scraper) -> None:
    web.on("instagram.com", ddgs_results("instagram.com", 2))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="small lotus tattoo", platforms=[INS], min_results=5)

    assert [c.tier for c in results] == [2, 2]  # instagram is a tier-2 platform; tier 3 repeats are deduplicated
    assert {c.domain for c in web.calls} == {"instagram.com"}
    assert [c.query for c in web.calls] == ["small lotus tattoo", "lotus tattoo"]


def _hit(image: str, url: str = "https://example.com/page") -> dict:
    return {"title": "t", "image": image, "thumbnail": "", "url": url, "height": "", "width": "", "source": "Bing"}


async def test_duplicates_are_dropped_within_and_across_tiers(web: FakeWeb, start_scraper) -> None:
    web.on(
        "pinterest.com",
        [
            _hit("https://i.pinimg.com/736x/ab/rose.jpg?utm_source=ddg"),
            _hit("https://i.pinimg.com/236x/ab/rose.jpg"),  # same pin, smaller size folder
            _hit("HTTPS://I.PINIMG.COM/originals/ab/rose.jpg#top"),
            _hit("https://example.com/a.png"),
        ],
    )
    web.on(
        "reddit.com",
        [
            _hit("http://example.com/a.png"),
            _hit("https://example.com:443/a.png?fbclid=zzz"),
            _hit("https://example.com/b.png"),
            _hit("data:image/png;base64,AAAA"),  # not downloadable: dropped
            _hit(""),
        ],
    )
    web.on(
        "instagram.com",
        [
            _hit("https://i.pinimg.com/564x/ab/rose.jpg"),
            _hit("https://example.com/b.png"),
            _hit("https://example.com/c.png"),
        ],
    )
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="rose tattoo", min_results=10)

    urls = [c.image_url for c in results]
    assert len(urls) == 4, urls
    assert "https://i.pinimg.com/736x/ab/rose.jpg" in urls  # first variant wins, tracking removed
    assert "https://example.com/b.png" in urls
    assert [c.image_url for c in results if c.tier == 2] == ["https://example.com/c.png"]


async def test_max_results_is_respected(web: FakeWeb, start_scraper) -> None:
    for domain in SITE_DOMAINS.values():
        web.on(domain, ddgs_results(domain, 10, domain[:3]))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="rose tattoo", max_results=4, min_results=50)

    assert len(results) == 4
    # min_results above max_results is capped: four found means done, no tier 2.
    assert web.calls_for("instagram.com") == []


async def test_max_results_across_tiers(web: FakeWeb, start_scraper) -> None:
    web.on("pinterest.com", ddgs_results("pinterest.com", 2))
    web.on("instagram.com", ddgs_results("instagram.com", 10))
    scraper = await start_scraper()

    results, _ = await collect(scraper.stub, query="rose tattoo", max_results=5, min_results=5)

    assert [c.tier for c in results] == [1, 1, 2, 2, 2]

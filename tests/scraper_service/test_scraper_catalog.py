"""The catalog engine end to end: a manifest written here, searched through the gRPC server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scraper_service.config import ScraperSettings
from scraper_service.server import create_server
from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import FakeWeb, collect, ddgs_results

PIN, RED, INS, OTHER = (
    scraper_pb2.PLATFORM_PINTEREST,
    scraper_pb2.PLATFORM_REDDIT,
    scraper_pb2.PLATFORM_INSTAGRAM,
    scraper_pb2.PLATFORM_OTHER,
)
BASE = "http://127.0.0.1:8765"
ENTRIES = [
    {
        "url": f"{BASE}/red-rose.png",
        "source_url": f"{BASE}/red-rose.html",
        "platform": "pinterest",
        "title": "Red rose",
        "tags": ["rose", "flower"],
    },
    {"url": f"{BASE}/wolf.png", "platform": "Pinterest", "title": "Howling wolf", "tags": ["animal"]},
    {"url": f"{BASE}/skull.png", "platform": "reddit", "title": "Skull", "tags": ["skull"]},
    {"url": f"{BASE}/rose-skull.png", "platform": "reddit", "title": "Rose and skull", "tags": ["rose", "skull"]},
    {"url": f"{BASE}/lotus.png", "platform": "instagram", "title": "Lotus", "tags": []},
    {"url": f"{BASE}/private.png", "tags": ["roses"]},  # no platform, plural tag
    {"url": f"{BASE}/myspace.png", "platform": "myspace", "title": "Rose on myspace"},
]


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "catalog.jsonl", ENTRIES)


async def test_catalog_matches_query_words_per_platform(start_scraper, manifest: Path) -> None:
    scraper = await start_scraper(engines=("catalog",), catalog=manifest)

    results, _ = await collect(scraper.stub, query="rose skull", min_results=10)

    by_url = {c.image_url.removeprefix(BASE): c for c in results}
    # Matching entries only where a platform has matches (no wolf); every entry of a
    # platform where nothing matches (the lotus, in tier 2).
    assert set(by_url) == {
        "/red-rose.png",
        "/skull.png",
        "/rose-skull.png",
        "/lotus.png",
        "/private.png",
        "/myspace.png",
    }
    reddit = [c.image_url.removeprefix(BASE) for c in results if c.platform == RED]
    assert reddit == ["/rose-skull.png", "/skull.png"]  # best match first
    assert by_url["/lotus.png"].tier == 2 and by_url["/lotus.png"].platform == INS
    assert by_url["/private.png"].platform == OTHER and by_url["/private.png"].tier == 1
    assert by_url["/myspace.png"].platform == OTHER
    rose = by_url["/red-rose.png"]
    assert (rose.engine, rose.platform, rose.title, rose.source_url) == (
        "catalog",
        PIN,
        "Red rose",
        f"{BASE}/red-rose.html",
    )
    assert list(rose.request_headers) == []  # our own images need no platform Referer
    assert all(not c.from_cache for c in results)


async def test_catalog_returns_everything_when_nothing_matches(start_scraper, manifest: Path) -> None:
    scraper = await start_scraper(engines=("catalog",), catalog=manifest)
    results, _ = await collect(scraper.stub, query="zebra", min_results=50)
    assert len(results) == len(ENTRIES)


async def test_catalog_can_be_asked_for_other_only(start_scraper, manifest: Path) -> None:
    scraper = await start_scraper(engines=("catalog",), catalog=manifest)
    results, _ = await collect(scraper.stub, query="rose", platforms=[OTHER])
    assert {c.image_url.removeprefix(BASE) for c in results} == {"/private.png", "/myspace.png"}


async def test_catalog_reloads_a_rewritten_manifest(start_scraper, manifest: Path) -> None:
    scraper = await start_scraper(engines=("catalog",), catalog=manifest, cache_ttl_s=0)
    before, _ = await collect(scraper.stub, query="dragon", platforms=[PIN])
    assert "/dragon.png" not in {c.image_url.removeprefix(BASE) for c in before}

    write_manifest(manifest, [*ENTRIES, {"url": f"{BASE}/dragon.png", "platform": "pinterest", "title": "Dragon"}])
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse mtime clocks
    after, _ = await collect(scraper.stub, query="dragon", platforms=[PIN])
    assert [c.image_url.removeprefix(BASE) for c in after] == ["/dragon.png"]


async def test_catalog_and_duckduckgo_together_are_deduplicated(web: FakeWeb, start_scraper, manifest: Path) -> None:
    web_hits = ddgs_results("pinterest.com", 2)
    web_hits[0]["image"] = f"{BASE}/red-rose.png"  # the web found one of ours
    web.on("pinterest.com", web_hits)
    scraper = await start_scraper(engines=("duckduckgo", "catalog"), catalog=manifest)

    results, _ = await collect(scraper.stub, query="red rose", platforms=[PIN])

    urls = [c.image_url for c in results]
    assert len(urls) == len(set(urls)) == 2
    assert {c.engine for c in results} == {"duckduckgo", "catalog"}


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("{not json", "line 2"),
        ('{"title": "no url"}', '"url" is required'),
        ('{"url": "http://x/a.png", "tags": "rose"}', '"tags" must be a list'),
        ("[1, 2]", "must be a JSON object"),
    ],
)
async def test_a_broken_manifest_fails_at_start_naming_the_line(tmp_path: Path, line: str, complaint: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ENTRIES[0]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2") as caught:
        await create_server(ScraperSettings(port=0, engines=("catalog",), catalog=path))
    assert complaint in str(caught.value)


async def test_a_missing_manifest_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="SCRAPER_CATALOG"):
        await create_server(ScraperSettings(port=0, engines=("catalog",), catalog=tmp_path / "nope.jsonl"))

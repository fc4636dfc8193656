"""The demo catalog: deterministic drawings, a valid manifest, served over loopback."""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scraper_service import demo_catalog
from tattoo_search.v1 import scraper_pb2
from tests.scraper_service.fakes import collect


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[ThreadingHTTPServer]:
    server = demo_catalog.make_server(tmp_path / "demo", port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_same_seed_draws_the_same_catalog(tmp_path: Path) -> None:
    a = demo_catalog.write_catalog(tmp_path / "a", "http://127.0.0.1:1", count=8, seed=7)
    b = demo_catalog.write_catalog(tmp_path / "b", "http://127.0.0.1:1", count=8, seed=7)
    c = demo_catalog.write_catalog(tmp_path / "c", "http://127.0.0.1:1", count=8, seed=8)
    images = sorted(p.name for p in (a.parent / "images").iterdir())
    assert len(images) == 8
    assert a.read_text() == b.read_text()
    for name in images:
        assert (a.parent / "images" / name).read_bytes() == (b.parent / "images" / name).read_bytes()
    assert any((a.parent / "images" / n).read_bytes() != (c.parent / "images" / n).read_bytes() for n in images)


def test_the_designs_differ_from_each_other(tmp_path: Path) -> None:
    manifest = demo_catalog.write_catalog(tmp_path, "http://127.0.0.1:1", count=32)
    pixels = {(tmp_path / "images" / p.name).read_bytes() for p in (tmp_path / "images").iterdir()}
    assert len(pixels) == 32
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(entries) == 32
    assert {e["platform"] for e in entries if e["title"].endswith("rose tattoo")} == {
        "pinterest",
        "reddit",
        "instagram",
        "",
    }


def test_demo_catalog_is_served_and_searchable_over_loopback(http_server: ThreadingHTTPServer, tmp_path: Path) -> None:
    port = http_server.server_address[1]
    manifest = demo_catalog.write_catalog(tmp_path / "demo", f"http://127.0.0.1:{port}", count=8)
    entry = json.loads(manifest.read_text().splitlines()[0])

    with urllib.request.urlopen(entry["url"], timeout=5) as reply:
        image = Image.open(io.BytesIO(reply.read()))
    assert image.size == (demo_catalog.SIZE, demo_catalog.SIZE)
    with urllib.request.urlopen(entry["source_url"], timeout=5) as reply:
        assert entry["title"] in reply.read().decode()


async def test_scraper_finds_demo_roses_first(start_scraper, tmp_path: Path) -> None:
    manifest = demo_catalog.write_catalog(tmp_path, "http://127.0.0.1:8765", count=32)
    scraper = await start_scraper(engines=("catalog",), catalog=manifest)

    results, _ = await collect(scraper.stub, query="rose", platforms=[], min_results=4)

    assert len(results) == 4  # tier 1 holds three roses, tier 2 the Instagram one
    assert all("rose" in c.image_url for c in results)


def test_cli_write_only(tmp_path: Path) -> None:
    assert demo_catalog.main(["--dir", str(tmp_path), "--count", "4", "--port", "9999", "--write-only"]) == 0
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0])["url"].startswith("http://127.0.0.1:9999/images/")


def test_cli_rejects_a_bad_count(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        demo_catalog.main(["--dir", str(tmp_path), "--count", "0", "--write-only"])
    with pytest.raises(SystemExit):
        demo_catalog.main(["--dir", str(tmp_path), "--photos", "9", "--write-only"])


async def test_rare_words_outrank_common_ones(start_scraper, tmp_path: Path) -> None:
    manifest = demo_catalog.write_catalog(tmp_path, "http://127.0.0.1:8765", count=32)
    scraper = await start_scraper(engines=("catalog",), catalog=manifest)

    # On Pinterest two "traditional" designs come before the one mandala in the manifest;
    # four designs are mandalas and eight traditional, so "mandala" must weigh more.
    results, _ = await collect(
        scraper.stub, query="traditional mandala tattoo", platforms=[scraper_pb2.PLATFORM_PINTEREST], max_results=1
    )

    assert [c.image_url.rsplit("/", 1)[-1] for c in results] == ["fine-line-mandala-0.png"]


def test_photos_are_drawn_beside_each_design_and_repeatably(tmp_path: Path) -> None:
    """--photos: each design's photos (on skin, turned, reframed, JPEG) come beside it, the
    same for the same seed. That they are its near-duplicates is for a real model to say
    (tests/quality): pixels alone do not tell them apart from designs of the same motif."""
    a = demo_catalog.write_catalog(tmp_path / "a", "http://127.0.0.1:1", count=8, photos=2)
    b = demo_catalog.write_catalog(tmp_path / "b", "http://127.0.0.1:1", count=8, photos=2)
    entries = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(entries) == 24 and sum("photo" in e["tags"] for e in entries) == 16
    assert a.read_text() == b.read_text()
    names = sorted(p.name for p in (a.parent / "images").iterdir())
    assert names == sorted(p.name for p in (b.parent / "images").iterdir())
    for name in names:
        assert (a.parent / "images" / name).read_bytes() == (b.parent / "images" / name).read_bytes()
    for name in (n for n in names if "-photo" not in n):
        design = np.asarray(Image.open(a.parent / "images" / name), dtype=np.int16)
        for k in (1, 2):
            photo = np.asarray(Image.open(a.parent / "images" / name.replace(".png", f"-photo{k}.png")), dtype=np.int16)
            assert photo.shape == design.shape and np.abs(photo - design).mean() > 10  # another picture

"""The bulk importer (issue 13): ``python -m bulk_importer`` against a real
gateway (embedded gallery store and blobs in tmp, real embed and scraper servers).

The importer is only an HTTP client, so the tests run it as its users do: its ``main``
(in a thread) or a subprocess, and look at the gateway's own answers and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulk_importer.__main__ import main as importer_main
from search_gateway.fetch.images import content_hash
from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings
from tests.support.gateway_support import run_gateway, start_gateway_process
from tests.support.images import encode, jpeg, noise_image

pytestmark = pytest.mark.asyncio

KEY = {"X-API-Key": "key-a"}
UPLOADS = 'gateway_requests_total{method="POST",route="/collections/{name}/images",status="200"}'


def _settings(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path, **more: Any) -> Any:
    return gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=tmp / "gallery",
                            blobs_path=tmp / "blobs", api_keys=("studio-a:key-a", "studio-b:key-b"), **more)


async def _import(*args: str, key: str = "key-a") -> int:
    """The importer's main, as ``python -m bulk_importer`` runs it (its own event loop)."""
    os.environ["TATTOO_API_KEY"] = key
    try:
        return await asyncio.to_thread(importer_main, [*args, "--no-progress"])
    finally:
        del os.environ["TATTOO_API_KEY"]


def _report(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_input = {entry["input"]: entry for entry in lines}
    assert len(by_input) == len(lines), "an input was reported twice"
    return by_input


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        rows = [row for row in (await resp.text()).splitlines() if row.startswith(name)]
    return float(rows[0].split()[-1]) if rows else 0.0


async def _images(http: aiohttp.ClientSession, url: str, collection: str, headers: dict[str, str]) -> int:
    async with http.get(f"{url}/collections", headers=headers) as resp:
        listed = await resp.json()
    return int(next(c for c in listed["collections"] if c["name"] == collection)["images"])


async def test_a_folder_tree_imports_with_its_summary_and_a_second_run_uploads_nothing(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    tree = tmp_path / "flash"
    (tree / "2023" / "march").mkdir(parents=True)
    (tree / "2024").mkdir()
    (tree / "rose.jpg").write_bytes(jpeg(1, (320, 240)))
    (tree / "2023" / "skull.png").write_bytes(encode(noise_image(2, (300, 200)), "PNG"))
    (tree / "2023" / "march" / "dagger.jpg").write_bytes(jpeg(3, (256, 256)))
    (tree / "2024" / "rose-copy.jpg").write_bytes(jpeg(1, (320, 240)))  # the same bytes as rose.jpg
    (tree / "2024" / "notes.jpg").write_bytes(b"client wants it on the left forearm\n" * 20)
    (tree / ".DS_Store").write_bytes(b"\0" * 64)  # hidden: not an input
    report = tmp_path / "first.jsonl"
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        assert await _import(str(tree), "--collection", "flash", "--gateway", gw.url, "--report", str(report)) == 2
        assert await _import(str(tree), "--collection", "flash", "--gateway", gw.url, "--create",
                             "--report", str(report)) == 0
        first = _report(report)
        status = {Path(k).relative_to(tree).as_posix(): v["status"] for k, v in first.items()}
        # rose.jpg and its copy are found in scandir order: either one is the original.
        assert sorted([status.pop("rose.jpg"), status.pop("2024/rose-copy.jpg")]) == ["added", "duplicate"]
        assert status == {"2023/skull.png": "added", "2023/march/dagger.jpg": "added", "2024/notes.jpg": "rejected"}
        assert "not an image" in first[str(tree / "2024" / "notes.jpg")]["reason"].lower()
        added = next(v for v in first.values() if v["status"] == "added")
        assert added["sha256"] == content_hash(Path(added["input"]).read_bytes()) and added["id"]
        assert await _images(http, gw.url, "flash", KEY) == 3
        uploads = await _metric(http, gw.url, UPLOADS)
        assert uploads >= 1

        # Again: every image's hash is in the collection, so nothing is uploaded.
        again = tmp_path / "second.jsonl"
        assert await _import(str(tree), "--collection", "flash", "--gateway", gw.url, "--report", str(again)) == 0
        second = _report(again)
        assert sorted(v["status"] for v in second.values()) == ["rejected", "skipped", "skipped", "skipped", "skipped"]
        assert await _metric(http, gw.url, UPLOADS) == uploads
        assert await _images(http, gw.url, "flash", KEY) == 3


async def test_once_the_quota_is_reached_the_importer_stops_sending_and_reports_the_rest_to_send_again(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.jpg").write_bytes(jpeg(220 + i, (200 + 6 * i, 200)))
    report = tmp_path / "report.jsonl"
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_images=3)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        assert await _import(str(folder), "--collection", "archive", "--gateway", gw.url, "--create",
                             "--batch-files", "2", "--concurrency", "1", "--report", str(report)) == 1
        outcome = _report(report)
        statuses = sorted(v["status"] for v in outcome.values())
        # Two batches of 2 were answered (3 added, 1 refused by the quota); the other 4 were never sent.
        assert statuses == ["added"] * 3 + ["failed"] * 4 + ["rejected"], outcome
        assert await _metric(http, gw.url, UPLOADS) == 2
        assert all("run again" in v["reason"] for v in outcome.values() if v["status"] == "failed")
        assert await _images(http, gw.url, "archive", KEY) == 3


async def test_a_url_list_imports_through_the_gateways_downloader(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# flash from the studio's site\n{site.base}/img/4.jpg\n\n{site.base}/img/5.jpg\n"
                       f"{site.base}/broken.jpg\nhttp://10.0.0.1/private.jpg\n{site.base}/img/4.jpg\n")
    report = tmp_path / "urls.jsonl"
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        code = await _import(str(listing), "--collection", "site", "--gateway", gw.url, "--create",
                             "--report", str(report))
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert code == 0
        assert [(e["input"].rsplit("/", 1)[-1], e["status"]) for e in lines] == [
            ("4.jpg", "added"), ("5.jpg", "added"), ("broken.jpg", "rejected"), ("private.jpg", "rejected"),
            ("4.jpg", "duplicate")]
        assert all(e["reason"] for e in lines if e["status"] == "rejected")
        assert await _images(http, gw.url, "site", KEY) == 2
        # Another tenant's key: the collection does not exist for it.
        assert await _import(str(listing), "--collection", "site", "--gateway", gw.url,
                             "--report", str(tmp_path / "b.jsonl"), key="key-b") == 2


async def test_batches_over_the_gateways_limit_are_split_by_what_its_413_names(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(jpeg(200 + i, (120, 90)))
    report = tmp_path / "batch.jsonl"
    settings = _settings(embed, scraper, site, tmp_path).replace(collection_max_files=2)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        assert await _import(str(folder), "--collection", "small", "--gateway", gw.url, "--create",
                             "--batch-files", "5", "--concurrency", "1", "--report", str(report)) == 0
        assert sorted(v["status"] for v in _report(report).values()) == ["added"] * 5
        refused = 'gateway_requests_total{method="POST",route="/collections/{name}/images",status="413"}'
        assert await _metric(http, gw.url, refused) == 1  # one 413 taught it the limit of 2
        assert await _metric(http, gw.url, UPLOADS) == 3  # 2 + 2 + 1
        assert await _images(http, gw.url, "small", KEY) == 5


async def test_the_hashes_route_answers_only_for_the_callers_collection(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture = jpeg(7, (300, 220))
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        async with http.post(f"{gw.url}/collections", json={"name": "mine"}, headers=KEY) as resp:
            assert resp.status == 201
        form = aiohttp.FormData()
        form.add_field("file", picture, filename="p.jpg", content_type="image/jpeg")
        async with http.post(f"{gw.url}/collections/mine/images", data=form, headers=KEY) as resp:
            assert resp.status == 200
        held, absent = content_hash(picture), "0" * 64
        async with http.post(f"{gw.url}/collections/mine/hashes", json={"sha256": [held.upper(), absent]},
                             headers=KEY) as resp:
            assert resp.status == 200 and (await resp.json()) == {"present": [held]}
        async with http.post(f"{gw.url}/collections/mine/hashes", json={"sha256": [held]},
                             headers={"X-API-Key": "key-b"}) as resp:
            assert resp.status == 404
        for bad in ({"sha256": ["xyz"]}, {"sha256": "abc"}, {"sha256": [absent] * 1001}, ["nope"]):
            async with http.post(f"{gw.url}/collections/mine/hashes", json=bad, headers=KEY) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["detail"], bad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
async def test_killing_the_gateway_half_way_then_running_again_leaves_every_image_once(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "portfolio"
    folder.mkdir()
    for i in range(200):
        (folder / f"{i:03d}.jpg").write_bytes(jpeg(1000 + i, (96, 96)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_EMBED_TARGET": embed.target,
           "GATEWAY_SCRAPER_TARGET": scraper.target, "GATEWAY_GALLERY": "on",
           "GATEWAY_GALLERY_PATH": str(tmp_path / "gallery"), "GATEWAY_BLOBS_PATH": str(tmp_path / "blobs"),
           "GATEWAY_API_KEYS": "studio-a:key-a", "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
           "GATEWAY_LOG_LEVEL": "warning"}
    importer = [sys.executable, "-m", "bulk_importer", str(folder), "--collection", "portfolio",
                "--gateway", url, "--create", "--no-progress", "--batch-files", "8", "--concurrency", "2"]
    importer_env = {**os.environ, "TATTOO_API_KEY": "key-a"}


    first_report, second_report = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    gateway = await start_gateway_process(env, url)
    try:
        first = subprocess.Popen([*importer, "--retries", "1", "--report", str(first_report)], env=importer_env)
        while first.poll() is None and (not first_report.exists() or
                                        len(first_report.read_text().splitlines()) < 80):
            await asyncio.sleep(0.05)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
        assert await asyncio.to_thread(first.wait, 60) == 1  # some inputs failed: the gateway went away
        killed = _report(first_report)
        assert 0 < sum(v["status"] == "added" for v in killed.values()) < 200
        assert any(v["status"] == "failed" for v in killed.values())

        gateway = await start_gateway_process(env, url)
        second = subprocess.run([*importer, "--report", str(second_report)], env=importer_env, timeout=120,
                                capture_output=True, text=True)
        assert second.returncode == 0, second.stderr
        assert "0 failed" in second.stderr
        resumed = _report(second_report)
        assert sorted(resumed) == sorted(str(p) for p in folder.iterdir())  # every file, once
        assert {v["status"] for v in resumed.values()} <= {"added", "skipped", "duplicate"}
        assert sum(v["status"] == "skipped" for v in resumed.values()) >= 80
        async with aiohttp.ClientSession() as http:
            assert await _images(http, url, "portfolio", KEY) == 200
            hashes = [content_hash(p.read_bytes()) for p in folder.iterdir()]
            async with http.post(f"{url}/collections/portfolio/hashes", json={"sha256": hashes}, headers=KEY) as r:
                assert len((await r.json())["present"]) == 200
    finally:
        gateway.terminate()
        gateway.wait(10)


def _gone(reason: str) -> bool:
    return "could not be reached" in reason and "run again" in reason


async def test_a_gateway_that_refuses_connections_ends_the_run_with_every_input_reported_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "flash"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.jpg").write_bytes(jpeg(300 + i, (64, 64)))
    listing = tmp_path / "urls.txt"
    listing.write_text("https://example.org/a.jpg\nhttps://example.org/b.jpg\n")
    report = tmp_path / "report.jsonl"
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there: every connection is refused
    # The default 8 retries with back-off would take about 69 s per request; the
    # deadline (short here) ends the whole run instead.
    code = await _import(str(folder), str(listing), "--collection", "flash", "--gateway", url,
                         "--give-up-after", "1", "--report", str(report))
    assert code == 1
    outcome = _report(report)
    assert sorted(outcome) == sorted([*(str(p) for p in folder.iterdir()), "https://example.org/a.jpg",
                                      "https://example.org/b.jpg"])  # every input, once
    assert all(v["status"] == "failed" and _gone(v["reason"]) for v in outcome.values()), outcome
    err = capsys.readouterr().err
    assert "8 failed" in err and f"stopped sending: the gateway at {url} could not be reached for 1 s" in err


# Slow: the gateway is stopped mid-run and started again (a restart).
@pytest.mark.slow
async def test_a_gateway_gone_mid_run_ends_the_run_and_a_second_run_sends_exactly_the_failed_inputs(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "portfolio"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg(400 + i, (64, 64)))
    first_report, second_report = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    settings = _settings(embed, scraper, site, tmp_path)
    async with run_gateway(settings) as gw:
        # Default retries (8, about 69 s of back-off per request); only the deadline is short.
        first = asyncio.ensure_future(_import(
            str(folder), "--collection", "portfolio", "--gateway", gw.url, "--create", "--batch-files", "2",
            "--concurrency", "1", "--give-up-after", "1", "--report", str(first_report)))
        while not first.done() and (not first_report.exists() or len(first_report.read_text().splitlines()) < 4):
            await asyncio.sleep(0.01)
    # The gateway has stopped (its port refuses connections) with the import under way.
    assert await asyncio.wait_for(first, 60) == 1
    stopped = _report(first_report)
    assert sorted(stopped) == sorted(str(p) for p in folder.iterdir())  # every input, once
    added = {k for k, v in stopped.items() if v["status"] == "added"}
    failed = {k for k, v in stopped.items() if v["status"] == "failed"}
    assert added and failed and added | failed == set(stopped)
    assert all(_gone(stopped[k]["reason"]) for k in failed)

    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        before = await _metric(http, gw.url, UPLOADS)
        assert await _import(str(folder), "--collection", "portfolio", "--gateway", gw.url,
                             "--report", str(second_report)) == 0
        again = _report(second_report)
        assert {k for k, v in again.items() if v["status"] == "added"} == failed  # exactly those were sent
        assert {k for k, v in again.items() if v["status"] == "skipped"} == added
        assert await _images(http, gw.url, "portfolio", KEY) == 40
        assert await _metric(http, gw.url, UPLOADS) - before == -(-len(failed) // 32)  # batches of 32

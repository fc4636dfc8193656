"""The downloader against a hostile local web site and an internal service it must never reach."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from search_gateway.errors import DownloadFailed, DownloadRefused
from search_gateway.fetch.downloader import Downloader, DownloadLimits
from search_gateway.fetch.netguard import parse_allowlist
from tests.support.gateway_stack import Site
from tests.support.gateway_support import serve_aiohttp
from tests.support.images import jpeg

LIMITS = DownloadLimits(max_bytes=1024 * 1024, connect_timeout_s=1, read_timeout_s=0.3, attempt_timeout_s=1,
                        retries=2, backoff_s=0.01)


@pytest_asyncio.fixture
async def downloader(site: Site) -> AsyncIterator[Downloader]:
    d = Downloader(LIMITS, parse_allowlist([f"127.0.0.1:{site.port}"]))
    yield d
    await d.close()


async def test_a_good_image_and_a_followed_redirect(downloader: Downloader, site: Site) -> None:
    assert (await downloader.fetch(f"{site.base}/img/2.jpg"))[:3] == b"\xff\xd8\xff"
    assert await downloader.fetch(f"{site.base}/redirect/good") == await downloader.fetch(f"{site.base}/img/2.jpg")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{internal}/direct",
    "http://localhost:{internal}/by-name",
    "http://[::ffff:127.0.0.1]:{internal}/mapped",
    "http://[::1]:{internal}/v6-loopback",
    "http://0.0.0.0:{internal}/unspecified",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/cgnat",
    "{base}/redirect/internal",
    "{base}/redirect/internal-name",
    "{base}/redirect/metadata",
])
async def test_every_ssrf_case_is_refused_and_the_internal_route_never_reached(
        downloader: Downloader, site: Site, url: str) -> None:
    with pytest.raises(DownloadRefused) as refused:
        await downloader.fetch(url.format(internal=site.internal_port, base=site.base))
    assert refused.value.reason == "blocked_address"
    assert site.hits.count("/secret") == 0 and site.hits.paths.count("/direct") == 0


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://127.0.0.1/x.jpg", "bad_scheme"),
    ("file:///etc/passwd", "bad_scheme"),
    ("http://user:pw@127.0.0.1/x.jpg", "bad_url"),
])
async def test_only_plain_http_and_https(downloader: Downloader, url: str, reason: str) -> None:
    with pytest.raises(DownloadRefused) as refused:
        await downloader.fetch(url)
    assert refused.value.reason == reason


@pytest.mark.parametrize(("path", "reason"), [
    ("/slow.jpg", "timeout"),
    ("/endless.jpg", "too_large"),
    ("/huge.jpg", "too_large"),
    ("/loop/0", "too_many_redirects"),
    ("/missing.jpg", "http_4xx"),
])
async def test_hostile_responses_fail_with_a_reason(downloader: Downloader, site: Site, path: str, reason: str) -> None:
    with pytest.raises(DownloadFailed) as failed:
        await downloader.fetch(site.base + path, timeout=5)
    assert failed.value.reason == reason


async def test_5xx_is_retried_4xx_is_not(downloader: Downloader, site: Site) -> None:
    assert await downloader.fetch(f"{site.base}/flaky.jpg") == jpeg(1, (328, 240))
    assert site.hits.count("/flaky") == 2  # one 503, then the retry succeeded
    with pytest.raises(DownloadFailed):
        await downloader.fetch(f"{site.base}/missing.jpg")
    assert site.hits.count("/missing") == 0  # aiohttp's 404 route is not logged; one request was made


async def test_the_whole_fetch_has_a_budget(downloader: Downloader, site: Site) -> None:
    with pytest.raises(DownloadFailed) as failed:
        await downloader.fetch(f"{site.base}/slow.jpg", timeout=0.2)
    assert failed.value.reason == "timeout"


async def test_408_and_429_are_throttled_not_a_lasting_4xx() -> None:
    # "Not now" answers: the failed-download memory keeps them briefly, not like a 404.
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["status"]))

    app = web.Application()
    app.router.add_get("/{status}", handle)
    async with serve_aiohttp(app) as port:
        d = Downloader(LIMITS, parse_allowlist([f"127.0.0.1:{port}"]))
        try:
            reasons = []
            for status in (408, 429, 404):
                with pytest.raises(DownloadFailed) as failed:
                    await d.fetch(f"http://127.0.0.1:{port}/{status}")
                reasons.append(failed.value.reason)
        finally:
            await d.close()
    assert reasons == ["throttled", "throttled", "http_4xx"]

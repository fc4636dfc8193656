"""Servers for the gateway tests: a candidate-image web site with hostile routes, an
"internal" service that must never be reached, and helpers to run the three real
services (embed server, scraper, gateway) on loopback port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvicorn
from aiohttp import web

from embed_server.config import EmbedSettings
from embed_server.server import create_server as create_embed_server
from scraper_service.config import ScraperSettings
from scraper_service.server import create_server as create_scraper_server
from search_gateway.app import create_app
from search_gateway.config import GatewaySettings
from search_gateway.server import uvicorn_config
from tests.support.background import BackgroundServer, wait_for_health
from tests.support.images import encode, jpeg, noise_image

TINY_EMBED = {"EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "tiny", "EMBED_MODELS": "clip,dinov2",
              "EMBED_HOST": "127.0.0.1", "EMBED_PORT": "0", "EMBED_THREADS": "1"}


def embed_server(port: int = 0, **env: str) -> BackgroundServer:
    settings = EmbedSettings.from_env({**TINY_EMBED, "EMBED_PORT": str(port), **env})
    return BackgroundServer(lambda: create_embed_server(settings))


def scraper_server(catalog: Path, **overrides: Any) -> BackgroundServer:
    settings = ScraperSettings(port=0, engines=("catalog",), catalog=catalog, max_results=100,
                               min_results=1, grace_s=0, **overrides)

    async def start() -> tuple[Any, int]:
        server, port = await create_scraper_server(settings)
        return server, port

    return BackgroundServer(start)


@dataclass
class Hits:
    """Requests seen per path, to prove what was (never) reached."""

    paths: list[str] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        return sum(1 for p in self.paths if p.startswith(prefix))


@contextlib.asynccontextmanager
async def serve_aiohttp(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=0.1)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def internal_app(hits: Hits) -> web.Application:
    """Stands for a service on the gateway's private network (cloud metadata, an admin API)."""

    async def anything(request: web.Request) -> web.Response:
        hits.paths.append(request.path)
        return web.Response(body=jpeg(999), content_type="image/jpeg")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def image_site_app(hits: Hits, internal_port: int, latency_s: float = 0.0, images: int = 12) -> web.Application:
    """Candidate images, plus every hostile case the downloader must survive."""
    good = {i: jpeg(i, (320 + 8 * i, 240)) for i in range(images)}
    png = encode(noise_image(77, (200, 200), "RGBA"), "PNG")
    bomb = encode(noise_image(5, (64, 64)), "PNG")
    # A PNG header claiming 100000 x 100000 pixels: the pixel limit must refuse it unread.
    bomb = png_with_size(bomb, 100_000, 100_000)

    async def image(request: web.Request) -> web.Response:
        hits.paths.append(request.path)
        if latency_s:
            await asyncio.sleep(latency_s)
        return web.Response(body=good[int(request.match_info["n"])], content_type="image/jpeg")

    async def fixed(body: bytes, content_type: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            hits.paths.append(request.path)
            return web.Response(body=body, content_type=content_type)
        return handler

    async def slow(request: web.Request) -> web.StreamResponse:
        hits.paths.append(request.path)
        await asyncio.sleep(30)
        return web.Response(body=good[0], content_type="image/jpeg")

    async def endless(request: web.Request) -> web.StreamResponse:
        hits.paths.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            for _ in range(100_000):
                await resp.write(b"\xff" * 65536)
        return resp

    async def flaky(request: web.Request) -> web.Response:
        hits.paths.append(request.path)
        if hits.count("/flaky") < 2:
            return web.Response(status=503)
        return web.Response(body=good[1], content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        hits.paths.append(request.path)
        target = request.match_info["where"]
        locations = {
            "internal": f"http://127.0.0.1:{internal_port}/secret-via-redirect",
            "internal-name": f"http://localhost:{internal_port}/secret-via-redirect-name",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "good": "/img/2.jpg",
        }
        raise web.HTTPFound(locations[target])

    async def loop(request: web.Request) -> web.Response:
        hits.paths.append(request.path)
        raise web.HTTPFound(f"/loop/{int(request.match_info['n']) + 1}")

    app = web.Application()

    async def on_startup(app: web.Application) -> None:
        for path, body, ctype in (
            ("/broken.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10, "image/jpeg"),
            ("/page.jpg", b"<!doctype html><html><body>not an image</body></html>", "image/jpeg"),
            ("/truncated.jpg", good[3][: len(good[3]) // 2], "image/jpeg"),
            ("/empty.jpg", b"", "image/jpeg"),
            ("/bomb.png", bomb, "image/png"),
            ("/flash.png", png, "image/png"),
            ("/huge.jpg", good[4] + b"\0" * (3 * 1024 * 1024), "image/jpeg"),
        ):
            app.router.add_get(path, await fixed(body, ctype))

    app.on_startup.append(on_startup)
    app.router.add_get("/img/{n}.jpg", image)
    app.router.add_get("/slow.jpg", slow)
    app.router.add_get("/endless.jpg", endless)
    app.router.add_get("/flaky.jpg", flaky)
    app.router.add_get("/redirect/{where}", redirect)
    app.router.add_get("/loop/{n}", loop)
    return app


def png_with_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR size (with a valid CRC): a header that promises a pixel bomb."""
    ihdr = png[12:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]
    return png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]


def write_catalog(path: Path, urls: list[str]) -> Path:
    with path.open("w") as out:
        for i, url in enumerate(urls):
            out.write(json.dumps({"url": url, "source_url": f"https://example.org/post/{i}", "platform": "pinterest",
                                  "title": f"design {i}", "tags": ["tattoo", "flash"]}) + "\n")
    return path


@dataclass
class RunningGateway:
    port: int
    app: Any
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def run_gateway(settings: GatewaySettings, **app_options: Any) -> AsyncIterator[RunningGateway]:
    """The real app under a real uvicorn on a loopback port, on this test's event loop;
    ``app_options`` go to ``create_app`` (a test's clock, for example)."""
    app = create_app(settings, **app_options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Served as in production (server.uvicorn_config): proxy_headers=False, the
    # slow-client deadlines and the per-address connection cap.
    config = uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        # Until it listens, or fails to start (then its error is raised below).
        while not (server.started or task.done()):
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield RunningGateway(port, app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def start_gateway_process(env: dict[str, str], url: str, *, polls: int = 600) -> subprocess.Popen[bytes]:
    """``python -m search_gateway`` as deployed (a process a test may kill -9), once its
    /health answers; ``env`` is its whole environment. Killed if it never answers."""
    child = subprocess.Popen([sys.executable, "-m", "search_gateway"], env=env)
    async with aiohttp.ClientSession() as http:
        for _ in range(polls):
            try:
                async with http.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        return child
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    child.kill()
    raise AssertionError("the gateway did not start")


class CountedScraper:
    """Counts the gateway's calls to its (real) scraper: whether a search asked the web."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.calls = 0
        client = gateway.app.state.ops.scraper
        real = client.search

        def search(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        client.search = search


def _wait_ready(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        wait_for_health(channel, timeout=60)

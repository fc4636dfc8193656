"""Whole-search latency: the gateway's streaming pipeline against a seed-style pipeline.

100 candidate JPEGs (1024x768) are served on loopback with 200 ms latency each. The
gateway, the scraper (catalog engine) and the embed server (clip, full-size random
weights) run as separate processes, as deployed; the client times ``POST /search``
until every candidate is ranked. Then, with those processes stopped so they do not
compete for the cores, a seed-style pipeline runs in this process: a pool of 10
download threads, each downloading, decoding and encoding one image alone with torch.

    .venv/bin/python -m bench.search_latency                    # fp32, torch runtime
    .venv/bin/python -m bench.search_latency --runtime onnx --precision int8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from bench.common import embed_server_process, free_port


def _jpeg(seed: int, size: tuple[int, int] = (1024, 768)) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


@contextmanager
def image_site(n: int, latency_s: float) -> Iterator[int]:
    """An aiohttp site on its own thread and loop: /img/{i}.jpg after ``latency_s``."""
    images = [_jpeg(i) for i in range(n)]
    loop = asyncio.new_event_loop()
    port = free_port()
    started = threading.Event()

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(latency_s)
        return web.Response(body=images[int(request.match_info["n"])], content_type="image/jpeg")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/img/{n}.jpg", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=512).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextmanager
def process(module: str, env: dict[str, str], ready_url: str | None = None, timeout: float = 120) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env})
    try:
        if ready_url:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as resp:  # noqa: S310 (loopback)
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not become ready")
                time.sleep(0.2)
        else:
            time.sleep(2)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


def _post_search(url: str, image: bytes) -> tuple[float, dict]:
    boundary = "benchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310 (loopback)
        answer = json.loads(resp.read())
    return time.perf_counter() - start, answer


def gateway_runs(args: argparse.Namespace, urls: list[str], site_port: int) -> list[tuple[float, dict]]:
    embed_env = {"EMBED_MODELS": "clip", "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": args.architecture,
                 "EMBED_RUNTIME": args.runtime, "EMBED_PRECISION": args.precision, "EMBED_DEVICE": "cpu"}
    results = []
    with tempfile.TemporaryDirectory() as tmp, embed_server_process(embed_env) as (embed_target, _embed_pid):
        catalog = Path(tmp) / "catalog.jsonl"
        catalog.write_text("".join(json.dumps({"url": u, "title": f"design {i}", "tags": ["tattoo"]}) + "\n"
                                   for i, u in enumerate(urls)))
        scraper_port, gateway_port = free_port(), free_port()
        scraper_env = {"SCRAPER_ENGINES": "catalog", "SCRAPER_CATALOG": str(catalog), "SCRAPER_PORT": str(scraper_port),
                       "SCRAPER_MAX_RESULTS": str(len(urls)), "SCRAPER_MIN_RESULTS": "1"}
        gateway_env = {"GATEWAY_PORT": str(gateway_port), "GATEWAY_EMBED_TARGET": embed_target,
                       "GATEWAY_SCRAPER_TARGET": f"127.0.0.1:{scraper_port}",
                       "GATEWAY_FETCH_ALLOW": f"127.0.0.1:{site_port}", "GATEWAY_MAX_CANDIDATES": str(len(urls)),
                       "GATEWAY_SEARCH_BUDGET_S": "60", "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
                       "GATEWAY_CACHE_SIZE": "1", "GATEWAY_LOG_LEVEL": "warning",
                       # The gallery off: one kept in ./var from an earlier run (make run, another
                       # bench) would answer the candidates without a download and time nothing.
                       "GATEWAY_GALLERY": "off"}
        with process("scraper_service", scraper_env), \
                process("search_gateway", gateway_env, f"http://127.0.0.1:{gateway_port}/ready"):
            url = f"http://127.0.0.1:{gateway_port}/search?max_results=100"
            _post_search(url, _jpeg(10_000))  # warm-up: caption prompts, connections
            for run in range(args.runs):
                # A one-entry cache and a new query image each run: every candidate is
                # downloaded and embedded again.
                results.append(_post_search(url, _jpeg(20_000 + run)))
    return results


def seed_style(args: argparse.Namespace, urls: list[str]) -> tuple[float, float]:
    """Seed-style: 10 threads, each downloads, decodes and encodes one image alone (torch)."""
    import open_clip
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    query = preprocess(Image.open(io.BytesIO(_jpeg(10_000))).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        q = torch.nn.functional.normalize(model.encode_image(query), dim=-1)

    def one(url: str) -> float:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (loopback)
            data = resp.read()
        image = preprocess(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
        with torch.no_grad():
            v = torch.nn.functional.normalize(model.encode_image(image), dim=-1)
        return float((v @ q.T).item())

    start = time.perf_counter()
    first_20 = 0.0
    with ThreadPoolExecutor(10) as pool:
        for done, _ in enumerate(as_completed([pool.submit(one, u) for u in urls]), start=1):
            if done == 20:
                first_20 = time.perf_counter() - start
    return time.perf_counter() - start, first_20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx", "auto"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8", "auto"))
    parser.add_argument("--architecture", default="full", choices=("full", "tiny"))
    parser.add_argument("--skip-seed", action="store_true")
    args = parser.parse_args()

    with image_site(args.candidates, args.latency_ms / 1000) as port:
        urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(args.candidates)]
        runs = gateway_runs(args, urls, port)
        seed = None if args.skip_seed else seed_style(args, urls)

    times = [t for t, _ in runs]
    ranked = [a["stats"]["ranked"] for _, a in runs]
    print(f"\n## Whole-search latency, {args.candidates} candidates at {args.latency_ms:.0f} ms each, "
          f"clip ({args.architecture}, random weights), {args.runtime}/{args.precision}, {os.cpu_count()} cores\n")
    print("| pipeline | median s | runs | ranked |")
    print("|---|---|---|---|")
    print(f"| gateway (streaming, batched) | {statistics.median(times):.2f} | "
          f"{', '.join(f'{t:.2f}' for t in times)} | {min(ranked)}/{args.candidates} |")
    if seed is not None:
        print(f"| seed-style (10 threads, one image at a time) | {seed[0]:.2f} | 1 | "
              f"{args.candidates}/{args.candidates} |")
        print(f"| seed-style, stop after 20 | {seed[1]:.2f} | 1 | 20/{args.candidates} |")
        print(f"\nspeed-up over seed-style (all ranked): {seed[0] / statistics.median(times):.1f}x")
    last = runs[-1][1]
    print(f"\nlast run: partial={last['partial']} timings={last['timings']} stats={last['stats']}")


if __name__ == "__main__":
    main()

"""A rolling restart of the embed servers fails no search (issue 14).

Three `python -m embed_server` processes (tiny clip, random weights, torch: the quickest
to start) behind one `python -m search_gateway` process, whose embed target lists all
three; the scraper serves a catalog of images from a local site. CLIENTS clients search
for DURATION_S seconds while each replica in turn gets SIGTERM, exits, and is started
again on the same port once the previous one is back. Every search must answer 200 with
no candidate lost to an embed failure; p50/p95 latency and the count are printed.

What makes it hold (search_gateway/clients/channels.py): a stopping replica turns health
NOT_SERVING at once and the gateway's channel, which watches health (client-side health
checking), stops picking it; a call that still lands there, or is cut by the exit, is
retried on another replica (the retry policy); the restarted replica is taken back
once it reports SERVING (its models warm), found by the short reconnect back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2

from embed_server.server import model_health_name
from service_common.grpc_server import GrpcServer
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.background import wait_for_health
from tests.support.gateway_stack import gateway_settings, image_form
from tests.support.gateway_support import (
    Hits,
    embed_server,
    image_site_app,
    run_gateway,
    scraper_server,
    serve_aiohttp,
    write_catalog,
)
from tests.support.images import jpeg

# Slow: replicas started, stopped and restarted under load (make test-fast leaves it out).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DURATION_S = 60.0
CLIENTS = 20
REPLICAS = 3
IMAGES = 6  # candidates per search, each downloaded and embedded (the embedding cache is kept to one entry)
QUERY_IMAGES = 64
SERVING = health_pb2.HealthCheckResponse.SERVING

EMBED_ENV = {
    "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": "tiny", "EMBED_MODELS": "clip", "EMBED_RUNTIME": "torch",
    "EMBED_HOST": "127.0.0.1", "EMBED_THREADS": "1", "EMBED_DECODE_WORKERS": "1", "EMBED_LOG_LEVEL": "WARNING",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(prefix: str) -> dict[str, str]:
    # Nothing with the service's prefix from the shell: only what the test sets.
    return {key: value for key, value in os.environ.items() if not key.startswith(prefix)}


@dataclass
class Replica:
    """One embed server process on a fixed port, restartable on that port."""

    port: int
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"embed-{self.port}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "embed_server"], cwd=REPO, stdout=log,
                                        stderr=subprocess.STDOUT,
                                        env={**_clean_env("EMBED_"), **EMBED_ENV, "EMBED_PORT": str(self.port)})
        log.close()

    def wait_serving(self, timeout: float = 180) -> None:
        with grpc.insecure_channel(self.target) as channel:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert self.process is not None and self.process.poll() is None, self.log()
                with contextlib.suppress(grpc.RpcError):  # not listening yet
                    if wait_for_health(channel, SERVING, timeout=1) == SERVING:
                        return
                time.sleep(0.1)
        raise AssertionError(f"replica {self.target} not SERVING after {timeout} s: {self.log()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code once it has exited (a graceful stop gives 0)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return (self.logs / f"embed-{self.port}-{self.starts}.log").read_text(errors="replace")[-4000:]

    def image_batches(self) -> int:
        return _image_batches(self.target)


@contextlib.contextmanager
def gateway_process(env: dict[str, str], logs: Path) -> Iterator[str]:
    port = _free_port()
    with (logs / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "search_gateway"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**_clean_env("GATEWAY_"), **env, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
                 "GATEWAY_LOG_LEVEL": "warning"},
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_ready(http: aiohttp.ClientSession, url: str, logs: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise AssertionError(f"gateway not ready: {(logs / 'gateway.log').read_text(errors='replace')[-4000:]}")


@dataclass
class Outcome:
    status: int
    latency_s: float
    problem: str = ""


async def _client(http: aiohttp.ClientSession, url: str, stop_at: float, first: int, out: list[Outcome]) -> None:
    n = first
    while time.monotonic() < stop_at:
        data = image_form(jpeg(n % QUERY_IMAGES + 1000))
        n += CLIENTS
        started = time.monotonic()
        try:
            async with http.post(f"{url}/search", data=data) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            out.append(Outcome(0, time.monotonic() - started, f"{type(exc).__name__}: {exc}"))
            continue
        latency = time.monotonic() - started
        if status != 200:
            out.append(Outcome(status, latency, str(body)[:300]))
        elif "embed_error" in body["stats"]:  # a 200 that lost candidates to an embed failure
            out.append(Outcome(status, latency, f"candidates lost: {body['stats']}"))
        else:
            out.append(Outcome(status, latency))


async def _roll(replicas: list[Replica], stop_at: float, restarts: list[str]) -> None:
    """Each replica in turn, again and again until the clients stop: SIGTERM, wait for the
    exit, start again on the same port, wait until SERVING, then the next one."""
    turn = 0
    await asyncio.sleep(3)  # let the load settle on all three first
    while time.monotonic() < stop_at - 5 or turn < REPLICAS:
        replica = replicas[turn % REPLICAS]
        code = await asyncio.to_thread(replica.stop)
        assert code == 0, f"replica {replica.target} exited {code}: {replica.log()}"
        replica.start()
        await asyncio.to_thread(replica.wait_serving)
        restarts.append(replica.target)
        turn += 1
        await asyncio.sleep(1)


async def _until_every_replica_embedded(http: aiohttp.ClientSession, url: str, replicas: list[Replica],
                                        searches: int = 100) -> list[int]:
    batches: list[int] = []
    for n in range(searches):
        batches = [await asyncio.to_thread(replica.image_batches) for replica in replicas]
        if all(batches):
            break
        async with http.post(f"{url}/search", data=image_form(jpeg(5000 + n))) as response:
            assert response.status == 200, await response.text()
    return batches


async def test_a_rolling_restart_of_three_embed_replicas_fails_no_search(tmp_path: Path) -> None:
    replicas = [Replica(_free_port(), tmp_path) for _ in range(REPLICAS)]
    hits = Hits()
    try:
        for replica in replicas:
            replica.start()
        async with serve_aiohttp(image_site_app(hits, 1, images=IMAGES)) as site_port:
            urls = [f"http://127.0.0.1:{site_port}/img/{i}.jpg" for i in range(IMAGES)]
            with scraper_server(write_catalog(tmp_path / "catalog.jsonl", urls)) as scraper:
                for replica in replicas:
                    await asyncio.to_thread(replica.wait_serving)
                env = {
                    "GATEWAY_EMBED_TARGET": "ipv4:" + ",".join(r.target for r in replicas),
                    "GATEWAY_SCRAPER_TARGET": scraper.target,
                    "GATEWAY_FETCH_ALLOW": f"127.0.0.1:{site_port}",
                    "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
                    "GATEWAY_CACHE_SIZE": "1",  # every search embeds its candidates
                    "GATEWAY_MAX_CANDIDATES": str(IMAGES),
                    "GATEWAY_SEARCH_BUDGET_S": "30",  # a slow search on a busy machine is not a failure here
                }
                timeout = aiohttp.ClientTimeout(total=90)
                connector = aiohttp.TCPConnector(limit=CLIENTS)
                async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                    with gateway_process(env, tmp_path) as url:
                        await _wait_ready(http, url, tmp_path)
                        outcomes: list[Outcome] = []
                        restarts: list[str] = []
                        stop_at = time.monotonic() + DURATION_S
                        clients = [_client(http, url, stop_at, i, outcomes) for i in range(CLIENTS)]
                        await asyncio.gather(_roll(replicas, stop_at, restarts), *clients)
                        # Every replica, restarted, takes its share again: search on until
                        # each has run a batch since its last start (the last one may have
                        # come back just as the clients stopped).
                        batches = await _until_every_replica_embedded(http, url, replicas)
                        gateway_log = (tmp_path / "gateway.log").read_text(errors="replace")
    finally:
        for replica in replicas:
            replica.kill()

    latencies = sorted(o.latency_s for o in outcomes)
    p50, p95 = statistics.quantiles(latencies, n=100)[49], statistics.quantiles(latencies, n=100)[94]
    failed = [o for o in outcomes if o.problem]
    print(f"\nrolling restart: {len(outcomes)} searches by {CLIENTS} clients in {DURATION_S:.0f} s, "
          f"{len(restarts)} replica restarts, {len(failed)} failed; latency p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms; image batches per replica since its last start: {batches}")
    assert len(restarts) >= REPLICAS, restarts
    assert all(replica.exit_codes and set(replica.exit_codes) == {0} for replica in replicas)
    assert not failed, f"{len(failed)} of {len(outcomes)} searches failed, e.g. {failed[:3]}; gateway: {gateway_log[-3000:]}"
    assert all(count > 0 for count in batches), batches


async def test_a_replica_whose_default_model_is_not_serving_gets_no_calls(tmp_path: Path) -> None:
    """What spares searches the wait (or the refusal) on a replica that is restarting or
    stopping: the gateway's channel watches each replica's health under the default
    model's name and picks only those SERVING. Counted in batches, not timed."""
    with embed_server(EMBED_MODELS="clip") as ready, embed_server(EMBED_MODELS="clip") as warming:
        for server in (ready, warming):
            with grpc.insecure_channel(server.target) as channel:
                assert wait_for_health(channel, SERVING, timeout=120) == SERVING
        # As a replica reports while its model loads after a restart (or once stopping).
        assert isinstance(warming.server, GrpcServer)
        warming.call(warming.server.set_serving(model_health_name("clip"), False))
        hits = Hits()
        async with serve_aiohttp(image_site_app(hits, 1, images=IMAGES)) as site_port:
            urls = [f"http://127.0.0.1:{site_port}/img/{i}.jpg" for i in range(IMAGES)]
            with scraper_server(write_catalog(tmp_path / "catalog.jsonl", urls)) as scraper:
                settings = gateway_settings(f"ipv4:{ready.target},{warming.target}", scraper.target, None,
                                            fetch_allow=(f"127.0.0.1:{site_port}",), cache_size=1, embed_batch=1)
                async with run_gateway(settings) as gateway, aiohttp.ClientSession() as http:
                    for n in range(4):  # 4 x (1 query + 6 candidates) Embed calls: round robin would split them
                        async with http.post(f"{gateway.url}/search", data=image_form(jpeg(7000 + n))) as response:
                            assert response.status == 200, await response.text()
        batches = {name: await asyncio.to_thread(_image_batches, server.target)
                   for name, server in (("ready", ready), ("warming", warming))}
    assert batches["ready"] > 0 and batches["warming"] == 0, batches


def _image_batches(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=30)
    return sum(model.image_batches.batches for model in reply.models)

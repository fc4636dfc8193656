"""Slow clients against ``python -m search_gateway``: slowloris headers, stalled bodies and
``/health`` latency meanwhile.

The gateway runs as deployed (its own process, default slow-client settings unless
overridden with ``GATEWAY_*`` in the environment); its backends are absent, which
``/health`` does not need. This process opens ``--sockets`` connections that send a
request line and then one header byte every ``--drip-s`` seconds (slowloris), plus
``--stalled`` requests that announce a 5 MB body, send 100 bytes and stop. For
``--seconds`` it probes ``GET /health`` on fresh connections, then reports how many
sockets the gateway still holds, how it ended the others, and the probe latencies.

The sockets come from ``--sources`` loopback addresses (127.0.1.x), so that the
per-address cap (GATEWAY_MAX_CONNECTIONS_PER_CLIENT, 64) does not refuse them and the
header deadline is what is measured; ``--sources 1`` measures the cap instead.

    .venv/bin/python -m bench.slow_clients                      # 3000 sockets, 30 s
    .venv/bin/python -m bench.slow_clients --sockets 3000 --sources 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import free_port

ROOT = Path(__file__).resolve().parents[1]
PROBE_SOURCE = "127.0.0.250"  # /health probes come from an address no slow client uses


@dataclass
class Tally:
    opened: int = 0
    connect_failed: int = 0
    refused_429: int = 0
    answered_408: int = 0
    answered_other: int = 0
    closed_silently: int = 0
    still_open: int = 0
    closed_after_s: list[float] = field(default_factory=list)


def _raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, needed))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


async def _slow_client(port: int, source: str, drip_s: float, stalled: bool, tally: Tally,
                       until: float, gate: asyncio.Semaphore) -> None:
    async with gate:  # open gradually: the listen backlog is finite
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 10)
        except (OSError, TimeoutError):
            tally.connect_failed += 1
            return
    tally.opened += 1
    start = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        if stalled:
            # An upload that starts properly, then stops: the form parser waits for the rest.
            part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n\r\n'
            writer.write(b"POST /search HTTP/1.1\r\nHost: gateway\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 5000000\r\n\r\n" + part + b"\xff" * (100 - len(part)))
        else:
            writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        await writer.drain()
        while True:
            left = until - loop.time()
            if left <= 0:
                tally.still_open += 1
                return
            try:
                data = await asyncio.wait_for(reader.read(4096), min(drip_s, left))
            except TimeoutError:
                if not stalled:
                    writer.write(b"X")  # one more header byte; the headers never end
                    await writer.drain()
                continue
            answer = data + (await reader.read() if data else b"")
            if answer.startswith(b"HTTP/1.1 429") and b"too_many_connections" in answer:
                tally.refused_429 += 1  # the per-address cap (a rate-limit 429 counts as another status)
            elif answer.startswith(b"HTTP/1.1 408"):
                tally.answered_408 += 1
            elif answer:
                tally.answered_other += 1
            else:
                tally.closed_silently += 1
            tally.closed_after_s.append(time.monotonic() - start)
            return
    except (ConnectionError, OSError):
        tally.closed_silently += 1
        tally.closed_after_s.append(time.monotonic() - start)
    finally:
        writer.close()


async def _probe_health(port: int, until: float, every_s: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        begin = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(PROBE_SOURCE, 0)), 10)
            writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                latencies.append(time.perf_counter() - begin)
            else:
                failures += 1
        except (OSError, TimeoutError):
            failures += 1
        await asyncio.sleep(every_s)
    return latencies, failures


async def _run(port: int, args: argparse.Namespace) -> tuple[Tally, Tally, list[float], int]:
    loop = asyncio.get_running_loop()
    until = loop.time() + args.seconds
    gate = asyncio.Semaphore(200)
    slow, stalled = Tally(), Tally()
    tasks = [
        asyncio.ensure_future(_slow_client(port, f"127.0.1.{1 + i % args.sources}", args.drip_s, False, slow, until, gate))
        for i in range(args.sockets)
    ] + [
        asyncio.ensure_future(_slow_client(port, f"127.0.2.{1 + i % args.sources}", args.drip_s, True, stalled, until, gate))
        for i in range(args.stalled)
    ]
    latencies, failures = await _probe_health(port, until, args.probe_every_s)
    await asyncio.gather(*tasks)
    return slow, stalled, latencies, failures


def _cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni"


def _report(name: str, tally: Tally, total: int) -> None:
    closes = sorted(tally.closed_after_s)
    median = f"{statistics.median(closes):.1f} s" if closes else "-"
    last = f"{closes[-1]:.1f} s" if closes else "-"
    print(f"{name}: {total} asked, {tally.opened} opened, {tally.connect_failed} could not connect; "
          f"{tally.still_open} still open at the end; ended by the gateway: {tally.answered_408} with 408, "
          f"{tally.refused_429} with 429 (connection cap), {tally.answered_other} with another status, "
          f"{tally.closed_silently} closed "
          f"without an answer; time to end: median {median}, last {last}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=3000, help="slowloris connections")
    parser.add_argument("--stalled", type=int, default=100, help="requests whose body stalls after 100 bytes")
    parser.add_argument("--sources", type=int, default=60, help="loopback source addresses to spread them over")
    parser.add_argument("--drip-s", type=float, default=5.0, help="seconds between header bytes")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to hold and probe")
    parser.add_argument("--probe-every-s", type=float, default=0.1)
    args = parser.parse_args()

    limit = _raise_fd_limit(args.sockets + args.stalled + 200)
    if limit < args.sockets + args.stalled + 100:
        print(f"the fd limit ({limit}) allows fewer sockets: lowering --sockets", file=sys.stderr)
        args.sockets = max(0, limit - args.stalled - 100)
    port = free_port()
    env = {**os.environ, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "GATEWAY_LOG_LEVEL": "warning",
           "GATEWAY_EMBED_TARGET": "127.0.0.1:9", "GATEWAY_SCRAPER_TARGET": "127.0.0.1:9"}
    # The gateway inherits the raised limit (it holds one fd per socket too).
    gateway = subprocess.Popen([sys.executable, "-m", "search_gateway"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                if gateway.poll() is not None or time.monotonic() > deadline:
                    print("the gateway did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        started = time.monotonic()
        slow, stalled, latencies, failures = asyncio.run(_run(port, args))
        wall = time.monotonic() - started
    finally:
        gateway.terminate()
        gateway.wait(20)

    settings = {k: v for k, v in os.environ.items() if k.startswith("GATEWAY_")}
    print(f"python -m search_gateway, settings {settings or 'default'}; {os.cpu_count()} cores; CPU flags: {_cpu_flags()}")
    print(f"{args.sockets} slowloris sockets (a header byte every {args.drip_s:g} s) and {args.stalled} stalled "
          f"bodies from {args.sources} source address(es), held {args.seconds:g} s (run took {wall:.1f} s)")
    _report("slowloris", slow, args.sockets)
    _report("stalled body", stalled, args.stalled)
    if latencies:
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"/health meanwhile: {len(latencies)} answered, {failures} failed; p50 {statistics.median(ordered) * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")
    else:
        print(f"/health meanwhile: none answered, {failures} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the benchmarks: timing, a server in a subprocess, machine facts."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def median_seconds(run: Callable[[], object], min_seconds: float, min_runs: int = 3, warmup: int = 1) -> float:
    """Median wall time of `run`, repeated until both limits are met."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embed_server_process(
    env: dict[str, str], timeout: float = 900, command: Sequence[str] = ("-m", "embed_server")
) -> Iterator[tuple[str, int]]:
    """`python -m embed_server` (or `python <command>`, a launcher that ends in the
    server's main) in a subprocess; yields (target, pid) once SERVING."""
    port = free_port()
    full_env = {**os.environ, "EMBED_HOST": "127.0.0.1", "EMBED_PORT": str(port), "EMBED_LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen([sys.executable, *command], env=full_env)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"embed server exited with {process.returncode}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("embed server did not become SERVING")
                time.sleep(0.2)
        yield target, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    return (
        f"{os.cpu_count()} vCPUs ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (Linux)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

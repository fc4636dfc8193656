"""Container health checks without extra binaries: ``python docker/healthcheck.py grpc HOST:PORT``
(grpc.health.v1 must say SERVING) or ``python docker/healthcheck.py http URL`` (must answer 200)."""

from __future__ import annotations

import sys
import urllib.request


def main(kind: str, target: str) -> int:
    if kind == "http":
        with urllib.request.urlopen(target, timeout=4) as resp:  # noqa: S310 (a fixed local URL)
            return 0 if resp.status == 200 else 1
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=4)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except Exception as exc:  # any failure is "unhealthy", with a reason in the log
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)

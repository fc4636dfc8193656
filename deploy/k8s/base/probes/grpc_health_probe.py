"""Kubernetes exec probe for our gRPC services: ``grpc.health.v1`` over plaintext or TLS.

The kubelet's built-in ``grpc:`` probe speaks plaintext only and sends no credentials,
so it cannot check a server that requires TLS (with client certificates) and a token,
as the production overlay runs them. This script reads the same variables as the
service it probes (``<PREFIX>TLS_CERT_FILE``, ``<PREFIX>TLS_KEY_FILE``,
``<PREFIX>TLS_CLIENT_CA_FILE``, ``<PREFIX>AUTH_TOKEN``; an exec probe inherits the
container's environment), so one command works with TLS on or off:

    python grpc_health_probe.py --port 50051 --env-prefix EMBED_ --service ""

With TLS it trusts ``<PREFIX>TLS_CLIENT_CA_FILE`` (our certificates share one CA), shows
the server's own certificate as its client certificate, and checks the server name
``localhost`` (the certificates list it). ``--any-status`` passes on any answer,
NOT_SERVING included: a liveness check that a server which is draining or retrying a
model load is alive, so that the kubelet does not restart it for that.

Exit status: 0 healthy, 1 not (the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(port: int, prefix: str) -> grpc.Channel:
    cert_file = os.environ.get(f"{prefix}TLS_CERT_FILE", "").strip()
    if not cert_file:
        return grpc.insecure_channel(f"127.0.0.1:{port}")
    key_file = os.environ.get(f"{prefix}TLS_KEY_FILE", "").strip()
    ca_file = os.environ.get(f"{prefix}TLS_CLIENT_CA_FILE", "").strip()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes(),
    )
    return grpc.secure_channel(f"localhost:{port}", credentials)


def check(port: int, prefix: str, service: str, any_status: bool, timeout_s: float) -> tuple[bool, str]:
    """(healthy, what the server said or why it could not be asked)."""
    token = os.environ.get(f"{prefix}AUTH_TOKEN", "").strip()
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    try:
        with _channel(port, prefix) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, metadata=metadata
            )
    except grpc.RpcError as exc:
        return False, f"health check of {service!r} failed: {exc.code().name}: {exc.details()}"
    except OSError as exc:  # an unreadable certificate file
        return False, f"cannot read the TLS files named by {prefix}TLS_*: {exc}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return any_status or reply.status == health_pb2.HealthCheckResponse.SERVING, f"{service!r} is {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--env-prefix", required=True, help="the service's settings prefix: EMBED_ or SCRAPER_")
    parser.add_argument("--service", default="", help='health name; "" is the whole server')
    parser.add_argument("--any-status", action="store_true", help="pass on any answer (liveness)")
    parser.add_argument("--timeout-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    healthy, said = check(args.port, args.env_prefix, args.service, args.any_status, args.timeout_s)
    if not healthy:
        print(f"unhealthy: {said}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

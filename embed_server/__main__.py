"""`python -m embed_server`: run the embedding server until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import sys

from embed_server.config import EmbedSettings, SettingsError
from service_common.grpc_security import SecurityConfigError
from service_common.grpc_server import GrpcServer
from service_common.service_main import Service, run_async, run_service, serve_grpc

log = logging.getLogger("embed_server")


async def _run(settings: EmbedSettings) -> None:
    from embed_server.server import create_server  # after logging is set up: imports torch

    def listening(server: GrpcServer, port: int) -> None:
        log.info(
            "listening on %s:%d (%s); models=%s weights=%s%s",
            settings.host,
            port,
            settings.security.describe(),
            ",".join(settings.models),
            settings.weights,
            " (RANDOM weights: for demos and benchmarks only; models whose weights ship with a package,"
            " squeezenet, stay pretrained)" if settings.weights == "random" else "",
        )
        if server.metrics_port is not None:
            log.info("metrics on http://%s:%d/metrics", settings.host, server.metrics_port)

    # A port in use, a certificate that cannot be used: the service cannot start.
    await serve_grpc(lambda: create_server(settings), listening, settings.grace_s,
                     start_errors=(OSError, SecurityConfigError))


def main() -> int:
    return run_service(Service(
        "embed_server", EmbedSettings.from_env, (SettingsError,),
        log_format=lambda s: f"%(asctime)s %(levelname)s %(name)s [weights={s.weights}] %(message)s",
        run=run_async(_run),
    ))


if __name__ == "__main__":
    sys.exit(main())

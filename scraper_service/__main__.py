"""``python -m scraper_service``: run the scraper gRPC server until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import sys

from scraper_service.config import ScraperSettings
from scraper_service.server import create_server
from service_common.grpc_server import GrpcServer
from service_common.service_main import Service, run_async, run_service, serve_grpc

logger = logging.getLogger("scraper_service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def run(settings: ScraperSettings) -> None:
    def listening(server: GrpcServer, port: int) -> None:
        logger.info("scraper listening on %s:%d (engines: %s; %s)", settings.host, port,
                    ", ".join(settings.engines), settings.security.describe())
        if server.metrics_port is not None:
            logger.info("metrics on http://%s:%d/metrics", settings.host, server.metrics_port)

    await serve_grpc(lambda: create_server(settings), listening, settings.grace_s)


def _settings_error(name: str, error: Exception) -> None:
    # Misconfiguration is reported as one log line naming the key: more useful than a traceback.
    logging.basicConfig(format=LOG_FORMAT)
    logger.error("cannot start: %s", error)


def main() -> int:
    return run_service(Service(
        "scraper_service", ScraperSettings.from_env, (ValueError,), log_format=lambda _: LOG_FORMAT, run=run_async(run),
        # A bad catalog manifest, a port in use, an unusable certificate.
        start_errors=(ValueError, OSError), settings_error=_settings_error,
    ))


if __name__ == "__main__":
    sys.exit(main())

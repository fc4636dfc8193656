"""``python -m scraper_service``: run the scraper gRPC server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from scraper_service.config import ScraperSettings
from scraper_service.server import create_server
from service_common.grpc_server import serve, stop_requested

logger = logging.getLogger("scraper_service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def run(settings: ScraperSettings) -> None:
    stop = stop_requested()
    server, port = await create_server(settings)
    logger.info("scraper listening on %s:%d (engines: %s; %s)", settings.host, port, ", ".join(settings.engines),
                settings.security.describe())
    if server.metrics_port is not None:
        logger.info("metrics on http://%s:%d/metrics", settings.host, server.metrics_port)
    await serve(server, stop, settings.grace_s)


def main() -> int:
    # Misconfiguration is reported as one line naming the key: more useful than a traceback.
    try:
        settings = ScraperSettings.from_env()
    except ValueError as exc:
        logging.basicConfig(format=LOG_FORMAT)
        logger.error("cannot start: %s", exc)
        return 2
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    try:
        asyncio.run(run(settings))
    except (ValueError, OSError) as exc:  # a bad catalog manifest, a port in use, an unusable certificate
        logger.error("cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

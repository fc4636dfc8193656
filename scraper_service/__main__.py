"""``python -m scraper_service``: run the scraper gRPC server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from scraper_service.config import ScraperSettings
from scraper_service.server import create_server

logger = logging.getLogger("scraper_service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def serve(settings: ScraperSettings) -> None:
    # Handlers first: a supervisor may signal as soon as it reads the address below.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server, port = await create_server(settings)
    await server.start()
    logger.info("scraper listening on %s:%d (engines: %s)", settings.host, port, ", ".join(settings.engines))
    await stop.wait()
    logger.info("stopping (grace %.1fs)", settings.grace_s)
    await server.stop(settings.grace_s)


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
        asyncio.run(serve(settings))
    except (ValueError, OSError) as exc:  # a bad catalog manifest, a port in use
        logger.error("cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

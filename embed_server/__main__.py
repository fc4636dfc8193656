"""`python -m embed_server`: run the embedding server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from embed_server.config import EmbedSettings, SettingsError
from service_common.grpc_security import SecurityConfigError
from service_common.grpc_server import serve, stop_requested

log = logging.getLogger("embed_server")

# How long calls in flight may take to finish after SIGTERM. A constant until the
# settings grow EMBED_GRACE_S, as the scraper has SCRAPER_GRACE_S.
GRACE_S = 5.0


async def _run(settings: EmbedSettings) -> int:
    from embed_server.server import create_server  # after logging is set up: imports torch

    stop = stop_requested()
    try:
        server, port = await create_server(settings)
    except (OSError, SecurityConfigError) as exc:  # a port in use, a certificate that cannot be used
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "listening on %s:%d (%s); models=%s weights=%s%s",
        settings.host,
        port,
        settings.security.describe(),
        ",".join(settings.models),
        settings.weights,
        " (RANDOM weights: for demos and benchmarks only)" if settings.weights == "random" else "",
    )
    await serve(server, stop, GRACE_S)
    return 0


def main() -> int:
    try:
        settings = EmbedSettings.from_env()
    except SettingsError as exc:
        print(f"embed_server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s [weights={settings.weights}] %(message)s",
    )
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())

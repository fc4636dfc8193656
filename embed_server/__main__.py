"""`python -m embed_server`: run the embedding server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from embed_server.config import EmbedSettings, SettingsError
from service_common.grpc_security import SecurityConfigError
from service_common.grpc_server import serve, stop_requested

log = logging.getLogger("embed_server")


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
        " (RANDOM weights: for demos and benchmarks only; models whose weights ship with a package,"
        " squeezenet, stay pretrained)" if settings.weights == "random" else "",
    )
    if server.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", settings.host, server.metrics_port)
    await serve(server, stop, settings.grace_s)
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

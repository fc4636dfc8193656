"""`python -m embed_server`: run the embedding server until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from embed_server.config import EmbedSettings, SettingsError


async def _serve(settings: EmbedSettings) -> None:
    from embed_server.server import create_server  # after logging is set up: imports torch

    server, port = await create_server(settings)
    log = logging.getLogger("embed_server")
    log.info(
        "listening on %s:%d; models=%s weights=%s%s",
        settings.host,
        port,
        ",".join(settings.models),
        settings.weights,
        " (RANDOM weights: for demos and benchmarks only)" if settings.weights == "random" else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing requests in flight (5 s at most)")
    await server.stop(5.0)


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
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

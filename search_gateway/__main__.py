"""``python -m search_gateway``: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn

from search_gateway.app import create_app
from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.server import uvicorn_config


def main() -> int:
    try:
        settings = GatewaySettings.from_env()
    except ConfigError as exc:
        print(f"search_gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The same configuration the tests serve with (server.py): slow-client deadlines,
    # the per-address connection cap, no proxy headers.
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    server.run()
    # A start-up failure (a corrupt gallery store, say) is logged by uvicorn; the exit
    # status must say so too, or a supervisor would think the gateway stopped cleanly.
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())

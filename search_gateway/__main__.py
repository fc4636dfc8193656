"""``python -m search_gateway``: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import sys

import uvicorn

from search_gateway.app import create_app
from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.server import uvicorn_config
from service_common.service_main import Service, run_service


def _serve(settings: GatewaySettings) -> int:
    # The same configuration the tests serve with (server.py): slow-client deadlines,
    # the per-address connection cap, no proxy headers. uvicorn stops gracefully on
    # SIGINT or SIGTERM itself.
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    server.run()
    # A start-up failure (a corrupt gallery store, say) is logged by uvicorn; the exit
    # status must say so too, or a supervisor would think the gateway stopped cleanly.
    return 0 if server.started else 3


def main() -> int:
    return run_service(Service(
        "search_gateway", GatewaySettings.from_env, (ConfigError,),
        log_format=lambda _: "%(asctime)s %(levelname)s %(name)s: %(message)s", run=_serve,
    ))


if __name__ == "__main__":
    sys.exit(main())

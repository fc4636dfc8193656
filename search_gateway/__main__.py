"""``python -m search_gateway``: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn

from search_gateway.app import create_app
from search_gateway.config import ConfigError, GatewaySettings


def main() -> int:
    try:
        settings = GatewaySettings.from_env()
    except ConfigError as exc:
        print(f"search_gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # The gateway streams NDJSON and holds searches open for their budget; a
        # graceful stop waits that long and no longer.
        timeout_graceful_shutdown=int(settings.search_budget_s) + 5,
        proxy_headers=False,  # the client address feeds the rate limit: never trust it from headers
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

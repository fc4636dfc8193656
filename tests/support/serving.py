"""What the slow-client tests look at inside the gateway's server (served by
gateway_support.run_gateway exactly as ``python -m search_gateway`` serves it)."""

from __future__ import annotations

from search_gateway.server import GuardedH11Protocol
from tests.support.gateway_support import RunningGateway


def protocol_of(gateway: RunningGateway) -> type[GuardedH11Protocol]:
    """The server's protocol class: its ``counts`` are the open connections per address."""
    cls = gateway.server.config.http_protocol_class
    assert issubclass(cls, GuardedH11Protocol), cls
    return cls

"""HTTP/2 keepalive, both ends from one place.

The gateway's channels ping their backends to notice a peer that vanished without
closing the connection (a killed host, a dropped NAT entry): with no ping, the next
call on such a connection waits for its deadline. A server, though, polices pings:
one that arrives sooner than it allows is a "strike", and after `max_ping_strikes`
strikes it closes the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (the
calls on it fail, the channel reconnects). gRPC's server defaults allow one ping
every 5 minutes while calls are open and one every 2 hours on a connection without
calls, far less often than a client pinging every 30 s. So the clients' options
(`Keepalive.client_options`, search_gateway/clients/channels.py) and the servers' options
(`Keepalive.server_options`, service_common/grpc_server.py, i.e. the embed server
and the scraper) are derived from the same `Keepalive`, and the servers always allow
what the clients do.

gRPC's client sends at most one ping a second whatever `time_ms` says, so a
`time_ms` under 1000 pings once a second (the tests use that, through a
`Keepalive(...)` passed to both ends).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keepalive:
    """How often the client pings (`time_ms`) and how long it waits for the ping's
    answer before it calls the connection dead (`timeout_ms`)."""

    time_ms: int = 30_000
    timeout_ms: int = 10_000
    # Strikes a server tolerates before GOAWAY (gRPC's default, stated so that it is
    # seen next to the interval it polices). With the interval below, a strike only
    # comes from something else pinging too often, which this still stops.
    max_ping_strikes: int = 2

    @property
    def server_min_interval_ms(self) -> int:
        """The shortest gap between two pings the server accepts: half the client's
        interval, so timer jitter or a delayed packet never turns an on-time ping into
        a strike."""
        return max(1, self.time_ms // 2)

    def client_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", self.time_ms),
            ("grpc.keepalive_timeout_ms", self.timeout_ms),
            # Ping on a connection with no call open too: the gateway's channels live as
            # long as the gateway and sit idle for hours at night; a dead connection
            # should be found then, not by the first search of the morning.
            ("grpc.keepalive_permit_without_calls", 1),
            # gRPC's client stops pinging after 2 pings with no data sent in between
            # (its default), which on an idle connection ends the keepalive after a
            # minute; 0 lifts that limit (the server allows it, below).
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def server_options(self) -> list[tuple[str, int]]:
        return [
            # Without this a ping on a connection with no call open is allowed once per
            # 2 hours, whatever the interval below says.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.server_min_interval_ms),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
        ]


# The one setting both ends use in production.
KEEPALIVE = Keepalive()

"""How the gateway is served: the uvicorn configuration, and an HTTP protocol that
bounds what slow or greedy clients can hold.

uvicorn alone only times out *idle keep-alive* connections: a client that sends its
headers one byte every few seconds (slowloris), or announces a body and stops
sending it, keeps its socket and its request task forever. :class:`GuardedH11Protocol`
adds, per connection:

* a header deadline: from the connection's first moment (and from the first byte of
  each later keep-alive request) the request line and headers must be complete
  within ``header_timeout_s``, or the client gets 408 and the connection closes;
* a body idle deadline: while a request body is being received, each chunk must
  follow the previous one within ``body_idle_timeout_s``; if not, 408 when no answer
  has started yet, else the connection just closes;
* a cap on connections per peer address: one over the cap gets 429 and is closed at
  once, before its request is read. Trusted proxies (GATEWAY_TRUSTED_PROXIES) are not
  capped: all their clients' connections come from their address.

Both ``python -m search_gateway`` and the tests build their server through
:func:`uvicorn_config`, so the tests run what production runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from search_gateway.config import GatewaySettings
from search_gateway.http.access import parse_trusted_proxies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientLimits:
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 15.0
    max_connections_per_client: int = 64  # 0: no cap
    # Peers the cap does not apply to: the trusted reverse proxies, whose one address
    # carries every client's connections (GATEWAY_TRUSTED_PROXIES).
    uncapped: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ClientLimits:
        return cls(settings.header_timeout_s, settings.body_idle_timeout_s, settings.max_connections_per_client,
                   parse_trusted_proxies(settings.trusted_proxies))

    def capped(self, peer: str) -> bool:
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return True
        return not any(ip.version == net.version and ip in net for net in self.uncapped)


class ConnectionCounts:
    """Open connections per peer address. Entries at zero are dropped, so the table is
    bounded by the addresses connected right now."""

    def __init__(self, cap: int, on_change: Callable[[int], None] | None = None,
                 capped: Callable[[str], bool] = lambda peer: True) -> None:
        self.cap = cap
        self._capped = capped
        self._open: dict[str, int] = {}
        self._total = 0
        self._on_change = on_change

    def try_open(self, peer: str) -> bool:
        held = self._open.get(peer, 0)
        if self.cap and held >= self.cap and self._capped(peer):
            return False
        self._open[peer] = held + 1
        self._changed(+1)
        return True

    def close(self, peer: str) -> None:
        held = self._open.get(peer, 0)
        if held <= 0:
            return
        if held == 1:
            del self._open[peer]
        else:
            self._open[peer] = held - 1
        self._changed(-1)

    def of(self, peer: str) -> int:
        return self._open.get(peer, 0)

    @property
    def total(self) -> int:
        return self._total

    def _changed(self, delta: int) -> None:
        self._total += delta
        if self._on_change is not None:
            self._on_change(self._total)


class SlowClientEvents:
    """What the protocol reports; :class:`search_gateway.metrics.Metrics` implements it."""

    def slow_client(self, kind: str) -> None:
        """``kind``: header_timeout, body_timeout, too_many_connections."""

    def client_connections(self, total: int) -> None:
        """Connections open now, over all clients."""


def _plain_response(status: int, reason: str, code: str, detail: str, extra: str = "") -> bytes:
    # Written straight to the socket: the request may not even be parsed yet, so
    # neither h11 nor the app can answer it. Same JSON shape as errors.to_response.
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus header/body deadlines and a per-address connection cap.

    Subclassed per server by :func:`guarded_protocol`, which binds ``limits``,
    ``counts`` and ``events``.
    """

    limits: ClientLimits = ClientLimits()
    counts: ConnectionCounts = ConnectionCounts(64)
    events: SlowClientEvents = SlowClientEvents()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._counted_peer: str | None = None
        self._bytes_this_request = 0

    # --- connection lifetime
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else "unknown"
        if not self.counts.try_open(peer):
            self.events.slow_client("too_many_connections")
            # Debug only: under a flood this would be one line per refused socket; the
            # metric counts them.
            log.debug("refused a connection from %s: already %d open", peer, self.counts.of(peer))
            transport.write(_plain_response(
                429, "Too Many Requests", "too_many_connections",
                f"Too many connections from your address (at most {self.limits.max_connections_per_client}); "
                "close some and retry.", "retry-after: 1\r\n"))
            transport.close()
            return
        self._counted_peer = peer
        # A fresh connection owes its first request's headers from now on; a client that
        # connects and sends nothing is a slow client too.
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        # Every way a connection ends comes through here (client gone, our close, a
        # reset, server shutdown): the one place the count is given back.
        self._cancel_timers()
        if self._counted_peer is not None:
            self.counts.close(self._counted_peer)
            self._counted_peer = None
        super().connection_lost(exc)

    # --- reading
    def data_received(self, data: bytes) -> None:
        if self._counted_peer is None:
            return  # refused at connect: whatever it sends is dropped
        if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.DONE:
            self._bytes_this_request += len(data)
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._bytes_this_request = 0
        self._follow_state()

    def _follow_state(self) -> None:
        """Arm the deadline that fits where the client is in its request."""
        if self.transport.is_closing():
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Part of a request line/headers has arrived (bytes were counted since the
            # last answer): the header deadline runs. A keep-alive connection with
            # nothing sent is uvicorn's keep-alive timeout's business.
            if self._bytes_this_request:
                self._arm_header_timer()
        elif state is h11.SEND_BODY:
            self._cancel(self._header_timer)
            self._header_timer = None
            self._arm_body_timer()  # every chunk restarts the idle clock
        else:
            self._cancel_timers()

    # --- deadlines
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:  # a deadline, not an idle timer: never pushed back
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_idle_timeout_s, self._body_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.events.slow_client("header_timeout")
        if self._bytes_this_request:
            self._answer_408(f"The request headers did not arrive within {self.limits.header_timeout_s:g} s.")
        else:
            self._close()  # nothing asked, nothing to answer

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        cycle = self.cycle
        # Not the client's fault: we stopped reading (the app is behind, flow control
        # paused the socket) or the client waits for our "100 Continue".
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._arm_body_timer()
            return
        self.events.slow_client("body_timeout")
        if cycle is not None and not cycle.response_started:
            self._answer_408(f"The request body stalled: nothing arrived for {self.limits.body_idle_timeout_s:g} s.")
        else:
            self._close()

    def _answer_408(self, detail: str) -> None:
        self._stop_app()
        self.transport.write(_plain_response(408, "Request Timeout", "request_timeout", detail))
        self._close()

    def _stop_app(self) -> None:
        # The app's receive() returns http.disconnect and its send() becomes a no-op
        # (as when the client leaves), so it cannot write after our 408.
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _close(self) -> None:
        self._stop_app()
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def guarded_protocol(limits: ClientLimits, events: SlowClientEvents | None = None) -> type[GuardedH11Protocol]:
    """A protocol class for one server: its own connection table, limits and events."""
    sink = events or SlowClientEvents()
    counts = ConnectionCounts(limits.max_connections_per_client, on_change=sink.client_connections,
                              capped=limits.capped)
    return type("GatewayH11Protocol", (GuardedH11Protocol,), {"limits": limits, "counts": counts, "events": sink})


def uvicorn_config(app: Any, settings: GatewaySettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the gateway is served with (``python -m search_gateway`` and tests)."""
    events = getattr(getattr(app, "state", None), "metrics", None)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "lifespan": "on",
        # The gateway streams NDJSON and holds searches open for their budget; a
        # graceful stop waits that long and no longer.
        "timeout_graceful_shutdown": int(settings.search_budget_s) + 5,
        "proxy_headers": False,  # the client address feeds the rate limit: never trust it from headers
        "http": guarded_protocol(ClientLimits.from_settings(settings), events),
        # No WebSocket routes: an upgrade would hand the socket to a protocol without
        # these deadlines (and without the connection count).
        "ws": "none",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)

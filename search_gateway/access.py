"""Who may call, how often, and with how large a body: small pure-ASGI middlewares.

They answer through :func:`errors.to_response`, so their 401/413/429 look like every
other error.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_gateway.errors import RateLimited, Unauthorized, UploadTooLarge, to_response

# Probes and scrapers must work without a key and without spending a client's quota.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})


def _is_open(path: str) -> bool:
    # The web page and its static files are public and cost nothing to serve: a browser
    # loading them must not spend the quota its searches need.
    return path in OPEN_PATHS or path == "/" or path.startswith("/static/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def client_key(scope: Scope) -> str:
    """The API key when one was sent, otherwise the peer address."""
    key = _header(scope, b"x-api-key")
    if key:
        return "key:" + key
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


class ApiKeyMiddleware:
    """When keys are configured, every request outside OPEN_PATHS needs one (X-API-Key or Bearer)."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or _is_open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-api-key")
        auth = _header(scope, b"authorization")
        if not given and auth and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        # Constant-time comparison against every key, so timing says nothing.
        ok = bool(given) and any(hmac.compare_digest(given.encode(), k) for k in self.keys)  # type: ignore[union-attr]
        if not ok:
            response = to_response(Unauthorized("A valid API key is required (X-API-Key header)."))
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenBuckets:
    """Per-client token buckets, bounded by least-recently-seen eviction."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._store(client, tokens - 1.0, now)
            return 0.0
        self._store(client, tokens, now)
        return (1.0 - tokens) / self.rate

    def _store(self, client: str, tokens: float, now: float) -> None:
        self._buckets[client] = (tokens, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, buckets: TokenBuckets | None) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.buckets is None or _is_open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait > 0:
            await to_response(RateLimited(f"Too many requests; retry in {math.ceil(wait)} s.", retry_after=wait))(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes``: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = UploadTooLarge(f"The request body is over the {self.max_bytes}-byte limit.")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await to_response(too_large)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large  # surfaces in the route, mapped to 413 by the one handler
            return message

        await self.app(scope, limited, send)

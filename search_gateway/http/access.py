"""Who may call, how often, and with how large a body: small pure-ASGI middlewares.

They answer through :func:`errors.to_response`, so their 401/413/429 look like every
other error.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable

from cachetools import LRUCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_gateway.errors import BadRequest, RateLimited, Unauthorized, UploadTooLarge, to_response
from search_gateway.tenants import LOCAL, parse_api_keys
from search_gateway.tenants import SCOPE_KEY as TENANT_SCOPE_KEY

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Probes and scrapers must work without a key and without spending a client's quota.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})


def _is_open(path: str) -> bool:
    # The web page and its static files are public and cost nothing to serve: a browser
    # loading them must not spend the quota its searches need.
    return path in OPEN_PATHS or path == "/" or path.startswith("/static/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _headers(scope: Scope, name: bytes) -> list[str]:
    # A header sent on several lines is one comma-separated list, in order.
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


class AmbiguousKey(BadRequest):
    """The request names two different keys: acting as either would be a guess."""

    code = "ambiguous_api_key"


def _presented(scope: Scope) -> list[str]:
    """Every key the request presents: each X-API-Key value, each Bearer token.

    Lines are split at commas, as a proxy may fold repeated headers into one line: no key
    holds a comma (GATEWAY_API_KEYS is a comma list, and a Bearer token has none).
    """
    found = [part.strip() for line in _headers(scope, b"x-api-key") for part in line.split(",")]
    for line in _headers(scope, b"authorization"):
        for part in line.split(","):
            part = part.strip()
            if part[:7].lower() == "bearer ":
                found.append(part[7:].strip())
    return [key for key in found if key]  # an empty header names no key


def caller_key(scope: Scope) -> str | None:
    """THE caller's key, for the key check and the rate limiter alike: X-API-Key or a Bearer token.

    The same key given more than once (both headers, or a header repeated by a proxy) is
    that key. Two different ones raise AmbiguousKey: taking the first, as before, let a
    request act as whichever key a proxy or client library happened to put first.
    """
    keys = set(_presented(scope))
    if len(keys) > 1:
        raise AmbiguousKey("The request carries more than one API key: send one key once "
                           "(in X-API-Key or as Authorization: Bearer, not two different ones).")
    return keys.pop() if keys else None


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``GATEWAY_TRUSTED_PROXIES`` entries: addresses or CIDR ranges."""
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{raw!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    """An address from a forwarded-chain entry: ``1.2.3.4``, ``1.2.3.4:80``, ``[v6]:80``, bare v6."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has several colons
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; count them as IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` node of each element of an RFC 7239 ``Forwarded`` header, in order."""
    nodes = []
    for element in _split_outside_quotes(value, ","):
        node = ""
        for pair in _split_outside_quotes(element, ";"):
            name, _, raw = pair.strip().partition("=")
            if name.strip().lower() == "for":
                node = raw.strip().strip('"').replace('\\"', '"')
        nodes.append(node)
    return nodes


class ClientIdentity:
    """Who a request counts against: its configured API key, else its client address.

    A key that is not configured is a string anyone can invent, so it never picks a
    bucket. The client address is the connecting peer, unless that peer is a trusted
    proxy: then it is the right-most address in the forwarded chain that is not a
    trusted proxy itself (entries further left were written by whoever sent the
    request and prove nothing). X-Forwarded-For is read when present, else RFC 7239
    ``Forwarded``.
    """

    def __init__(self, keys: Iterable[str] = (), trusted_proxies: Iterable[str] = ()) -> None:
        self.keys = frozenset(parse_api_keys(keys, secret=b""))  # the keys only, not their tenants
        self.proxies = parse_trusted_proxies(trusted_proxies)

    def _trusted(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip.version == net.version and ip in net for net in self.proxies)

    def address(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        peer_ip = _address(peer)
        if not self._trusted(peer_ip):
            return str(peer_ip) if peer_ip is not None else peer
        forwarded = _headers(scope, b"x-forwarded-for")
        chain = [part for line in forwarded for part in line.split(",")] if forwarded else [
            node for line in _headers(scope, b"forwarded") for node in _forwarded_for(line)]
        chain = [entry.strip() for entry in chain if entry.strip()]
        for entry in reversed(chain):
            ip = _address(entry)
            if not self._trusted(ip):
                # Written by the nearest trusted proxy, whatever its form ("unknown", an
                # obfuscated name): bounded so a bucket name stays small.
                return str(ip) if ip is not None else "node:" + entry[:64]
        # Every hop is a trusted proxy: the request started on one of them.
        return str(_address(chain[0])) if chain else str(peer_ip)

    def key(self, scope: Scope) -> str:
        try:
            given = caller_key(scope)
        except AmbiguousKey:  # refused by ApiKeyMiddleware first; with keys off, no key counts
            given = None
        if given is not None and given in self.keys:
            return "key:" + given
        return "ip:" + self.address(scope)


class ApiKeyMiddleware:
    """When keys are configured, every request outside OPEN_PATHS needs one (X-API-Key or Bearer).

    ``keys`` are ``GATEWAY_API_KEYS`` entries (``TENANT:KEY`` or a plain key, tenants.py);
    the caller's tenant is left in the scope for the routes, ``local`` when keys are off.
    """

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], tenant_key: bytes) -> None:
        self.app = app
        self.keys = tuple((k.encode(), tenant) for k, tenant in parse_api_keys(keys, secret=tenant_key).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            if scope["type"] == "http":
                scope[TENANT_SCOPE_KEY] = LOCAL
            await self.app(scope, receive, send)
            return
        is_open = _is_open(scope["path"]) or scope["method"] == "OPTIONS"
        try:
            given = caller_key(scope)
        except AmbiguousKey as exc:
            if not is_open:
                await to_response(exc)(scope, receive, send)
                return
            given = None  # probes and the page need no key: two keys there are no key at all
        # Constant-time comparison against every key, so timing says nothing.
        tenant = None
        for key, owner in self.keys:
            if hmac.compare_digest((given or "").encode(), key) and given:
                tenant = owner
        if tenant is not None:
            scope[TENANT_SCOPE_KEY] = tenant
        if is_open:
            await self.app(scope, receive, send)
            return
        if tenant is None:
            response = to_response(Unauthorized("A valid API key is required (X-API-Key header)."))
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenBuckets:
    """Per-client token buckets, bounded by least-recently-seen eviction.

    An LRU cache, not a TTL one: a bucket left alone refills by itself (``take``
    computes it), so age alone never needs to drop one; only the count is bounded.
    """

    def __init__(self, per_minute: int, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        # client -> (tokens, when they were counted)
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_clients)

    def take(self, client: str) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, buckets: TokenBuckets | None, identity: ClientIdentity | None = None) -> None:
        self.app = app
        self.buckets = buckets
        self.identity = identity or ClientIdentity()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.buckets is None or _is_open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self.identity.key(scope))
        if wait > 0:
            refusal = RateLimited(f"Too many requests; retry in {math.ceil(wait)} s.", retry_after=wait)
            await to_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes``: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int, collection_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Uploads to a collection carry many images: their own, larger limit.
        self.collection_max_bytes = collection_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, name = self.max_bytes, ""
        if self.collection_max_bytes and scope["path"].startswith("/collections/") and scope["path"].endswith("/images"):
            limit, name = self.collection_max_bytes, " (GATEWAY_COLLECTION_MAX_BYTES)"
        too_large = UploadTooLarge(f"The request body is over the {limit}-byte limit{name}.")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await to_response(too_large)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large  # surfaces in the route, mapped to 413 by the one handler
            return message

        await self.app(scope, limited, send)

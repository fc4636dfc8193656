"""SSRF-safe image downloads with aiohttp.

Defences, each at the layer that sees the truth:
- the URL: http/https only, no credentials, an IP-literal host is checked at once;
- DNS: :class:`GuardedResolver` drops every answer that is not a public address;
- the socket: :func:`_guarded_socket` checks the exact address about to be
  connected to (this also covers IP-literal hosts, which aiohttp never resolves);
- redirects are followed by hand, at most ``max_redirects``, each hop re-checked.
Bodies are capped while streaming; timeouts and 5xx are retried with back-off and
jitter; concurrency is bounded overall and per host.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from search_gateway.errors import DownloadFailed, DownloadRefused
from search_gateway.fetch.netguard import Allowlist, parse_ip, permitted

log = logging.getLogger(__name__)

# The host being fetched, so the socket factory (which only sees an address) can
# apply host-based allowlist entries. Context variables follow the connect task.
_current_host: contextvars.ContextVar[str] = contextvars.ContextVar("current_host", default="")

# Headers a scraper-supplied Candidate may not set: they would let it steer the
# connection itself or leak credentials.
_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer", "cookie", "authorization", "proxy-authorization", "proxy-connection", "expect"}
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class BlockedAddressError(OSError):
    """Raised inside aiohttp's resolver/socket layer for a refused address."""


@dataclass(frozen=True)
class DownloadLimits:
    max_bytes: int = 10 * 1024 * 1024
    concurrency: int = 32
    per_host: int = 8
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    attempt_timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.2
    max_redirects: int = 5
    user_agent: str = "tattoo-search-gateway/0.1"


class GuardedResolver(AbstractResolver):
    """DNS answers filtered through the address policy before aiohttp may use them."""

    def __init__(self, allow: Allowlist, inner: AbstractResolver | None = None) -> None:
        self._allow = allow
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept = []
        for answer in answers:
            ip = parse_ip(answer["host"])
            if ip is not None and permitted(host, port, ip, self._allow):
                kept.append(answer)
        if not kept:
            raise BlockedAddressError(f"{host} resolves only to addresses that are not public")
        return kept

    async def close(self) -> None:
        await self._inner.close()


# What aiohttp hands a socket factory: getaddrinfo's (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[Any, ...]


def _socket_factory(allow: Allowlist) -> Callable[[AddrInfo], socket.socket]:
    def _guarded_socket(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = parse_ip(str(sockaddr[0]))
        if ip is None or not permitted(_current_host.get(), int(sockaddr[1]), ip, allow):
            raise BlockedAddressError(f"connecting to {sockaddr[0]} is not allowed")
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock

    return _guarded_socket


def check_url(url: URL, allow: Allowlist) -> None:
    """Refuse what can be refused before any network traffic."""
    if url.scheme not in ("http", "https"):
        raise DownloadRefused(f"Only http and https URLs are fetched, not {url.scheme or 'a relative URL'!r}.",
                              reason="bad_scheme")
    if not url.raw_host:
        raise DownloadRefused("The URL has no host.", reason="bad_url")
    if url.user is not None or url.password is not None:
        raise DownloadRefused("URLs with credentials are not fetched.", reason="bad_url")
    ip = parse_ip(url.raw_host)
    if ip is not None and not permitted(url.raw_host, url.port or 0, ip, allow):
        raise DownloadRefused(f"The address {url.raw_host} is not public.", reason="blocked_address")


def _is_blocked(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddressError) or "not allowed" in str(seen) or "not public" in str(seen):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return False


def clean_headers(headers: Sequence[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in list(pairs)[:16]:
        key = name.strip()
        if (not key or key.lower() in _FORBIDDEN_HEADERS or key.lower().startswith("proxy-")
                or len(value) > 1024 or "\n" in value or "\r" in value):
            continue
        out[key] = value
    return out


class _Retryable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Downloader:
    """Fetches images; one instance (one connection pool) per gateway process."""

    def __init__(self, limits: DownloadLimits, allow: Allowlist) -> None:
        self.limits = limits
        self.allow = allow
        self._global = asyncio.Semaphore(limits.concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._per_host_users: dict[str, int] = {}
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow),
            socket_factory=_socket_factory(allow),
            limit=limits.concurrency,
            limit_per_host=limits.per_host,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=limits.connect_timeout_s, sock_read=limits.read_timeout_s
            ),
            auto_decompress=False,  # a gzip bomb must not get past the size cap
            trust_env=False,  # never route through a proxy from the environment
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        await self._session.close()

    async def fetch(self, url: str, headers: Mapping[str, str] | None = None, *, timeout: float | None = None) -> bytes:
        """The body of ``url``; raises :class:`DownloadFailed` with a ``reason`` label."""
        try:
            target = URL(url, encoded=False)
        except (ValueError, TypeError):
            raise DownloadRefused("The URL is not valid.", reason="bad_url") from None
        check_url(target, self.allow)
        budget = timeout if timeout is not None else self.limits.attempt_timeout_s * (self.limits.retries + 1)
        try:
            async with asyncio.timeout(budget):
                return await self._fetch_with_retries(target, clean_headers(headers or {}))
        except TimeoutError:
            raise DownloadFailed(f"Downloading {url} took longer than {budget:.1f} s.", reason="timeout") from None

    async def _fetch_with_retries(self, url: URL, headers: dict[str, str]) -> bytes:
        attempt = 0
        while True:
            try:
                async with self._slot(url.host or ""):
                    return await self._fetch_once(url, headers)
            except _Retryable as exc:
                if attempt >= self.limits.retries:
                    raise DownloadFailed(str(exc), reason=exc.reason) from None
                # Exponential back-off with full jitter, so retries from many
                # candidates do not arrive at a struggling host in lock step.
                delay = self.limits.backoff_s * (2**attempt) * (0.5 + random.random())
                attempt += 1
                await asyncio.sleep(delay)

    def _slot(self, host: str) -> _HostSlot:
        return _HostSlot(self, host.lower())

    async def _fetch_once(self, url: URL, headers: dict[str, str]) -> bytes:
        send = {"User-Agent": self.limits.user_agent, "Accept": "image/*,*/*;q=0.5", **headers}
        for _hop in range(self.limits.max_redirects + 1):
            check_url(url, self.allow)
            token = _current_host.set(url.raw_host or "")
            try:
                async with asyncio.timeout(self.limits.attempt_timeout_s):
                    async with self._session.get(url, headers=send, allow_redirects=False) as resp:
                        if resp.status in _REDIRECTS:
                            location = resp.headers.get("Location")
                            if not location:
                                raise DownloadFailed(f"A redirect from {url} has no Location.", reason="bad_redirect")
                            url = url.join(URL(location))
                            continue
                        if resp.status >= 500:
                            raise _Retryable("http_5xx", f"{url} answered {resp.status}.")
                        if resp.status in (408, 429):
                            # "Not now" rather than "not here": a 4xx that passes (the
                            # failed-download memory keeps it only briefly).
                            raise DownloadFailed(f"{url} answered {resp.status}.", reason="throttled")
                        if resp.status != 200:
                            reason = "http_4xx" if resp.status < 500 else "http_other"
                            raise DownloadFailed(f"{url} answered {resp.status}.", reason=reason,
                                                 http_status=resp.status)
                        return await self._read_capped(resp)
            except TimeoutError:
                raise _Retryable("timeout", f"{url} did not answer in time.") from None
            except aiohttp.ServerTimeoutError:
                raise _Retryable("timeout", f"{url} did not answer in time.") from None
            except aiohttp.ClientConnectorError as exc:
                if _is_blocked(exc):
                    raise DownloadRefused(f"{url.host} is not a public address.", reason="blocked_address") from None
                raise DownloadFailed(f"Could not connect to {url.host}.", reason="connect_error") from None
            except aiohttp.ClientPayloadError:
                raise DownloadFailed(f"{url} sent a broken body.", reason="broken_body") from None
            except aiohttp.ClientError as exc:
                raise DownloadFailed(f"Fetching {url} failed: {type(exc).__name__}.", reason="client_error") from None
            finally:
                _current_host.reset(token)
        raise DownloadFailed(f"More than {self.limits.max_redirects} redirects.", reason="too_many_redirects")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.limits.max_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise DownloadFailed(f"The image is {resp.content_length} bytes, over the {cap}-byte limit.", reason="too_large")
        encoding = resp.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("identity", ""):
            raise DownloadFailed(f"Compressed bodies ({encoding}) are not accepted for images.", reason="encoded_body")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > cap:
                raise DownloadFailed(f"The image is over the {cap}-byte limit.", reason="too_large")
        return bytes(body)


class _HostSlot:
    """Holds the global and the per-host semaphore for one attempt."""

    def __init__(self, owner: Downloader, host: str) -> None:
        self._owner = owner
        self._host = host

    async def __aenter__(self) -> None:
        owner = self._owner
        sem = owner._per_host.get(self._host)
        if sem is None:
            sem = owner._per_host[self._host] = asyncio.Semaphore(owner.limits.per_host)
        owner._per_host_users[self._host] = owner._per_host_users.get(self._host, 0) + 1
        try:
            await owner._global.acquire()
            try:
                await sem.acquire()
            except BaseException:
                owner._global.release()
                raise
        except BaseException:
            self._forget()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._owner._per_host[self._host].release()
        self._owner._global.release()
        self._forget()

    def _forget(self) -> None:
        # Drop idle per-host semaphores so the dict stays bounded by hosts in use.
        owner = self._owner
        users = owner._per_host_users.get(self._host, 1) - 1
        if users <= 0:
            owner._per_host_users.pop(self._host, None)
            owner._per_host.pop(self._host, None)
        else:
            owner._per_host_users[self._host] = users

"""Candidate URLs whose download failed recently, so that searches skip them for a while.

Without this memory a dead link or a web page posing as ``.jpg`` costs a fetch (and
its timeouts and retries) in every search that meets it. How long a failure is
remembered depends on why it failed: what the site said for sure (a 4xx, not an
image, too large) is remembered long; what may pass (a timeout, a 5xx, a refused
connection) only briefly. The memory is bounded: past ``max_entries`` the least
recently used failure is forgotten first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cachetools import TLRUCache

# Reasons (the downloader's and images.py's labels) that say something lasting about
# the URL. Every other reason is taken as transient and gets the short time.
LASTING_REASONS = frozenset({
    "http_4xx", "http_other", "bad_redirect", "too_many_redirects", "blocked_address",
    "too_large", "encoded_body", "not_an_image", "empty_image", "bad_image", "too_many_pixels",
})
# Refused before any traffic: checking again costs nothing, so they are not remembered.
FREE_REASONS = frozenset({"bad_scheme", "bad_url"})


class FailedDownloads:
    """URL -> reason of its last failed download, each entry with a reason-dependent lifetime.

    Used from the event loop only (like the embedding cache): no locking.
    """

    def __init__(
        self,
        max_entries: int,
        lasting_ttl_s: float,
        transient_ttl_s: float,
        timer: Callable[[], float] = time.monotonic,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        self.lasting_ttl_s = lasting_ttl_s
        self.transient_ttl_s = transient_ttl_s
        self._cache: TLRUCache[str, str] = TLRUCache(maxsize=max_entries, ttu=self._expires_at, timer=timer)
        self._on_skip = on_skip

    def ttl_for(self, reason: str) -> float:
        return self.lasting_ttl_s if reason in LASTING_REASONS else self.transient_ttl_s

    def _expires_at(self, _url: str, reason: str, now: float) -> float:
        return now + self.ttl_for(reason)

    def remember(self, url: str, reason: str) -> None:
        """Record that downloading ``url`` failed for ``reason`` (a TTL of 0 keeps nothing)."""
        if reason in FREE_REASONS or self.ttl_for(reason) <= 0 or self._cache.maxsize <= 0:
            return
        self._cache[url] = reason

    def reason(self, url: str) -> str | None:
        """Why ``url`` failed, while that is remembered; None when it should be tried."""
        reason = self._cache.get(url)
        if reason is not None and self._on_skip is not None:
            self._on_skip(reason)
        return reason

    def __len__(self) -> int:
        # Expired entries stay until something touches the cache: drop them first, so
        # the entries gauge tells what is really remembered.
        self._cache.expire()
        return len(self._cache)

    def __contains__(self, url: Any) -> bool:
        return url in self._cache

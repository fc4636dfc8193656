"""Bounded embedding cache: (model, image content hash) -> vector, plus (model, URL) -> hash.

A candidate URL seen again is neither downloaded nor embedded; the same picture at a
new URL is downloaded but not embedded. Entries expire after ``ttl_s`` (the URL side
matters most: what a URL serves can change; 0 keeps them until evicted) and the least
recently used go first. Each vector keeps the provenance of the reply that computed
it, so a search answered from the cache still says which weights ranked it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from cachetools import Cache, LRUCache, TTLCache

from search_gateway.replies import Provenance

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, eq=False)
class CachedVector:
    vector: np.ndarray  # unit length, read-only
    provenance: Provenance | None


def _bounded(max_entries: int, ttl_s: float, timer: Callable[[], float]) -> Cache[tuple[str, str], V]:
    # TTLCache evicts the least recently used entry when full, like LRUCache.
    if ttl_s > 0:
        return TTLCache(maxsize=max_entries, ttl=ttl_s, timer=timer)
    return LRUCache(maxsize=max_entries)


class EmbeddingCache:
    """Not thread-safe by design (nor are cachetools' caches): used from the event loop only."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._vectors: Cache[tuple[str, str], CachedVector] = _bounded(max_entries, ttl_s, clock)
        self._urls: Cache[tuple[str, str], str] = _bounded(max_entries, ttl_s, clock)
        self.stats = CacheStats()
        self._on_lookup = on_lookup

    def by_hash(self, model: str, sha256: str) -> CachedVector | None:
        cached = self._vectors.get((model, sha256))
        self._count(cached)
        return cached

    def by_url(self, model: str, url: str) -> tuple[str, CachedVector] | None:
        """The content hash ``url`` served last time, and its vector."""
        sha = self._urls.get((model, url))
        if sha is None:
            self._count(None)
            return None
        cached = self._vectors.get((model, sha))
        self._count(cached)
        return None if cached is None else (sha, cached)

    def put(self, model: str, sha256: str, vector: np.ndarray, url: str | None = None,
            provenance: Provenance | None = None) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        vector.setflags(write=False)  # shared between searches: nobody may edit it in place
        self._vectors[(model, sha256)] = CachedVector(vector, provenance)
        if url:
            self._urls[(model, url)] = sha256

    def remember_url(self, model: str, url: str, sha256: str) -> None:
        self._urls[(model, url)] = sha256

    def clear(self) -> None:
        self._vectors.clear()
        self._urls.clear()

    def __len__(self) -> int:
        return len(self._vectors)

    def _count(self, value: object | None) -> None:
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        if self._on_lookup is not None:
            self._on_lookup(value is not None)

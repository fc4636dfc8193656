"""Bounded embedding cache: (model, image content hash) -> vector, plus (model, URL) -> hash.

A candidate URL seen again is neither downloaded nor embedded; the same picture at a
new URL is downloaded but not embedded. Entries expire after ``ttl_s`` (the URL side
matters most: what a URL serves can change) and the least recently used go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class _LRU:
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._data: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock

    def get(self, key: tuple[str, str]) -> object | None:
        item = self._data.get(key)
        if item is None:
            return None
        stored_at, value = item
        if self._ttl and self._clock() - stored_at > self._ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: object) -> None:
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class EmbeddingCache:
    """Not thread-safe by design: used from the event loop only."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._vectors = _LRU(max_entries, ttl_s, clock)
        self._urls = _LRU(max_entries, ttl_s, clock)
        self.stats = CacheStats()
        self._on_lookup = on_lookup

    def by_hash(self, model: str, sha256: str) -> np.ndarray | None:
        vec = self._vectors.get((model, sha256))
        self._count(vec)
        return vec  # type: ignore[return-value]

    def by_url(self, model: str, url: str) -> tuple[str, np.ndarray] | None:
        sha = self._urls.get((model, url))
        if sha is None:
            self._count(None)
            return None
        vec = self._vectors.get((model, str(sha)))
        self._count(vec)
        return None if vec is None else (str(sha), vec)  # type: ignore[return-value]

    def put(self, model: str, sha256: str, vector: np.ndarray, url: str | None = None) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        vector.setflags(write=False)  # shared between searches: nobody may edit it in place
        self._vectors.put((model, sha256), vector)
        if url:
            self._urls.put((model, url), sha256)

    def remember_url(self, model: str, url: str, sha256: str) -> None:
        self._urls.put((model, url), sha256)

    def __len__(self) -> int:
        return len(self._vectors)

    def _count(self, value: object | None) -> None:
        if value is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        if self._on_lookup is not None:
            self._on_lookup(value is not None)

"""The cache of finished searches: cachetools' TTL + LRU cache, with counters for the log."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import cachetools

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


class TTLCache(Generic[K, V]):
    """Entries expire ``ttl_s`` after they were stored; past ``max_size`` the least
    recently used entry goes. ``ttl_s == 0`` or ``max_size == 0`` disables caching.

    Not thread-safe (nor is cachetools'): it lives on the event loop, which is single-threaded.
    """

    def __init__(self, ttl_s: float, max_size: int, clock: Clock = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_size = max_size
        # cachetools refuses a maximum size of 0; a disabled cache stores nothing anyway.
        self._entries = _CountingTTLCache[K, V](max(max_size, 1), ttl_s, timer=clock)
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0 and self._max_size > 0

    @property
    def evictions(self) -> int:
        """Live entries pushed out by newer ones (expired ones are not counted)."""
        return self._entries.evictions

    def __len__(self) -> int:
        """Entries not yet expired."""
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self.enabled:
            self._entries[key] = value


class _CountingTTLCache(cachetools.TTLCache[K, V]):
    # cachetools makes room by calling popitem() (after dropping expired entries), so
    # counting there counts exactly the evictions.
    def __init__(self, maxsize: int, ttl: float, timer: Clock) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self.evictions = 0

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self.evictions += 1
        return item

"""Bounded embedding cache: (model, weights fingerprint, image content hash) -> vector, plus (model, URL) -> hash.

A candidate URL seen again is neither downloaded nor embedded; the same picture at a
new URL is downloaded but not embedded. Entries expire after ``ttl_s`` (the URL side
matters most: what a URL serves can change; 0 keeps them until evicted) and the least
recently used go first. Each vector keeps the provenance of the reply that computed
it, so a search answered from the cache still says which weights ranked it.

Vectors are keyed by the weights that computed them too (the fingerprint every embed
reply carries), and a lookup serves only vectors of the fingerprint the cache holds
as the model's current one: the last one an embed reply named for that model
(``put``), or a ListModels reply (``observe``, through ``EmbedClient.weights_listeners``;
the gateway's model catalog asks before searches once its answer is 5 s old). When the
embed server comes back with other weights (another seed, pretrained in place of
random), the first such reply moves the model to the new fingerprint, and the old
vectors are not served while other weights answer: they are of another space, where the query's vector
and the candidates' would not compare. A restart is noticed before any reply too: the
gateway's channel to the embed server leaving or regaining READY (``weights_watch.py``)
makes every model's fingerprint unknown (``unverify``), and a model with no known
fingerprint is a miss until a reply names one.

Left open: where the gateway's connection does not see the restart (several replicas
behind one channel during a rolling restart to other weights, or a proxy that keeps
the connection and answers health itself), lookups serve the old weights' vectors
until the first reply from the new weights: at most about 5 s when searches come (the
catalog's ListModels), or the first Embed reply. The replicas themselves answer in two
spaces during such a rollout anyway. The URL -> content hash side does not depend on
the weights and is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from cachetools import Cache, LRUCache, TTLCache

from search_gateway.clients.replies import Provenance
from search_gateway.fetch.colour import ColourFacts

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, eq=False)
class CachedVector:
    vector: np.ndarray  # unit length, read-only
    provenance: Provenance | None
    # The picture's colour facts, read when it was downloaded: a later search answered
    # from the cache filters by colour without reading the pixels again.
    colour: ColourFacts | None = None


def _bounded(max_entries: int, ttl_s: float, timer: Callable[[], float]) -> Cache[K, V]:
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
        # (model, weights fingerprint, content hash) -> vector
        self._vectors: Cache[tuple[str, str, str], CachedVector] = _bounded(max_entries, ttl_s, clock)
        self._urls: Cache[tuple[str, str], str] = _bounded(max_entries, ttl_s, clock)
        # model -> the fingerprint of its last reply ("" when the server names none);
        # a model missing here has no known weights, and every lookup for it misses.
        self._current: dict[str, str] = {}
        self.stats = CacheStats()
        self._on_lookup = on_lookup

    def _get(self, model: str, sha256: str) -> CachedVector | None:
        fingerprint = self._current.get(model)
        return None if fingerprint is None else self._vectors.get((model, fingerprint, sha256))

    def by_hash(self, model: str, sha256: str) -> CachedVector | None:
        cached = self._get(model, sha256)
        self._count(cached)
        return cached

    def by_url(self, model: str, url: str) -> tuple[str, CachedVector] | None:
        """The content hash ``url`` served last time, and its vector."""
        sha = self._urls.get((model, url))
        if sha is None:
            self._count(None)
            return None
        cached = self._get(model, sha)
        self._count(cached)
        return None if cached is None else (sha, cached)

    def put(self, model: str, sha256: str, vector: np.ndarray, url: str | None = None,
            provenance: Provenance | None = None, colour: ColourFacts | None = None) -> None:
        """Keep a vector from an embed reply; its provenance names the weights, which
        become the model's current ones (``observe``)."""
        fingerprint = provenance.weights_fingerprint if provenance is not None else ""
        self.observe(model, fingerprint)
        vector = np.asarray(vector, dtype=np.float32)
        vector.setflags(write=False)  # shared between searches: nobody may edit it in place
        self._vectors[(model, fingerprint, sha256)] = CachedVector(vector, provenance, colour)
        if url:
            self._urls[(model, url)] = sha256

    def observe(self, model: str, fingerprint: str) -> None:
        """An embed reply for ``model`` named these weights: from now on lookups serve
        only vectors they computed. Another fingerprint's vectors stay until evicted
        (never served while it is not current), so a replica set answering with the
        old weights again finds them."""
        self._current[model] = fingerprint

    def unverify(self) -> None:
        """The embed server may have restarted with other weights: serve nothing until
        a reply says which weights answer now."""
        self._current.clear()

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

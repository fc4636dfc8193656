"""The retrieval step: query vectors in, gallery indices best first out.

A small interface so the harness can later rank through the product's own gallery
search (an index that answers top-K) instead of in memory; the metrics only need
each query's ranking. `depth` says how far a ranking goes: the exact retriever ranks
the whole gallery (mAP needs every hit's rank); one that cannot gives fewer, and
the report says the figures are then truncated at that depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class Retriever(Protocol):
    @property
    def size(self) -> int:
        """Gallery images it ranks."""
        ...

    @property
    def depth(self) -> int:
        """Length of every ranking `search` returns."""
        ...

    def search(self, queries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """For query rows in order: (first row of the chunk, rankings [rows, depth] of gallery indices)."""
        ...


class ExactCosine:
    """Every query against every gallery vector by cosine, in memory.

    Vectors are L2-normalised here even though the embed server sends them so, to
    stay exact for any source. Ties are broken by gallery index (a stable sort), so
    a ranking never depends on the sort's whims. Queries go in chunks to bound the
    memory of the score matrix on large galleries (SOP: 60k x 60k).
    """

    def __init__(self, gallery: np.ndarray, chunk_rows: int = 256) -> None:
        if gallery.ndim != 2 or gallery.shape[0] == 0:
            raise ValueError(f"gallery vectors must be a non-empty 2-D array, got shape {gallery.shape}")
        self._gallery = _normalised(gallery)
        self._chunk = max(1, chunk_rows)

    @property
    def size(self) -> int:
        return int(self._gallery.shape[0])

    @property
    def depth(self) -> int:
        return self.size

    def search(self, queries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for start, rankings, _ in self.search_scored(queries):
            yield start, rankings

    def search_scored(self, queries: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """As `search`, with each chunk's cosines [rows, gallery] by gallery index (two-stage search needs them)."""
        if queries.ndim != 2 or queries.shape[1] != self._gallery.shape[1]:
            raise ValueError(f"query vectors of shape {queries.shape} do not match gallery dim {self._gallery.shape[1]}")
        queries = _normalised(queries)
        for start in range(0, queries.shape[0], self._chunk):
            scores = queries[start : start + self._chunk] @ self._gallery.T
            yield start, np.argsort(-scores, axis=1, kind="stable"), scores


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)

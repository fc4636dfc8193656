"""Patch-level correspondence between a query image and a candidate.

Both inputs are L2-normalised patch features, so one matrix product gives every
query-patch / candidate-patch cosine; everything reported is read off that matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TEMPERATURE = 0.1  # cosines live in [-1, 1]; 1.0 would give a near-uniform softmax
# Below the minimum the softmax is a hard argmax to float precision; above the maximum
# it is uniform. Requests outside are refused rather than answered with noise.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class Correspondence:
    overall_similarity: float
    global_similarity: float
    top_indices: np.ndarray     # (Nq, k) int32: candidate patch indices, best first
    top_scores: np.ndarray      # (Nq, k) float32
    max_similarity: np.ndarray  # (grid_h, grid_w) float32: each query patch's best cosine
    similarity: np.ndarray | None
    attention: np.ndarray | None


def correspond(
    query_patches: np.ndarray,
    candidate_patches: np.ndarray,
    query_global: np.ndarray,
    candidate_global: np.ndarray,
    query_grid: tuple[int, int],
    top_k: int = 1,
    include_similarity: bool = False,
    include_attention: bool = False,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Correspondence:
    similarity = query_patches.astype(np.float32) @ candidate_patches.astype(np.float32).T
    k = max(1, min(top_k, similarity.shape[1]))
    # argpartition finds the k best in linear time; only those k are then sorted.
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    top_values = np.take_along_axis(similarity, top, axis=1)
    order = np.argsort(-top_values, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_values = np.take_along_axis(top_values, order, axis=1)
    attention = None
    if include_attention:
        # Shift before dividing: (s - max) / t is in [-2 / t, 0], so a tiny temperature
        # gives -inf (weight 0) rather than inf - inf = NaN, and the best patch keeps
        # weight exp(0) = 1: the sum is never 0.
        shifted = similarity.astype(np.float64) - similarity.max(axis=1, keepdims=True)
        weights = np.exp(shifted / float(temperature))
        attention = weights / weights.sum(axis=1, keepdims=True)
    return Correspondence(
        overall_similarity=float(similarity.mean()),
        global_similarity=float(np.dot(query_global, candidate_global)),
        top_indices=top.astype(np.int32),
        top_scores=top_values.astype(np.float32),
        max_similarity=similarity.max(axis=1).reshape(query_grid).astype(np.float32),
        similarity=similarity if include_similarity else None,
        attention=attention.astype(np.float32) if attention is not None else None,
    )

"""Stage two of a two-stage search (when asked): re-rank the global top K by local evidence.

Stage one ranks the gallery by the cosine of global vectors. A global vector sums up
the whole picture, so a crop, an occlusion or the design on skin instead of paper
moves it; the patch tokens the embed server serves (`EmbedPatches`, one L2-normalised
vector per cell of the model's grid) keep local evidence. For the query and each of
the K candidates, every query patch is compared with every candidate patch by cosine
(patches are L2-normalised here again, so any source is exact), and one local score
is read off that matrix:

- ``maxsim`` (Chamfer similarity, ColBERT's "late interaction"): each query patch takes
  its best cosine among the candidate's patches; the score is the mean over query
  patches, in [-1, 1]. It is asymmetric on purpose: a query that is a crop of the
  candidate finds every patch somewhere in it, while a candidate that shows only part
  of the query leaves the query's other patches unmatched. The user searches for what
  they showed.
- ``mutual``: the fraction of query patches whose best candidate patch has them as its
  own best query patch (mutual nearest neighbours), in [0, 1]. It counts consistent
  one-to-one matches rather than how close they are, so a plain background that is
  close to everything counts once, not for every patch. Ties go to the lowest index.

The new score is ``(1 - weight) * global + weight * local``: ``weight`` 0 keeps stage
one's order, 1 ranks by local evidence alone. The order sorts the new scores, best
first, ties kept in stage one's order. Both scores are cosine-like but spread
differently (global cosines of one model crowd into a narrow band), so the weight is
not a universal constant: `DEFAULT_WEIGHT` is the one measured on the near-duplicate
benchmark (docs/benchmarks.md, "Two-stage search"), which also says whether
re-ranking is on by default.

Pure numpy, no I/O: the caller fetches the patch tokens and decides K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["maxsim", "mutual"]
METHODS: tuple[Method, ...] = ("maxsim", "mutual")
# Measured on the near-duplicate benchmark (docs/benchmarks.md, "Two-stage search"): mutual
# nearest patches gained more than maxsim at every K, and any weight from 0.25 to 1 gave
# it within one query of the best; 0.5 keeps the global score's say in close calls.
DEFAULT_METHOD: Method = "mutual"
DEFAULT_WEIGHT = 0.5
# Candidates scored per matrix product (see local_scores).
_GROUP = 32
# Issue 23: the models whose image searches re-rank their results by default, from the
# gallery's stored patch tokens (docs/benchmarks.md, "Compact patch tokens", decides it per
# model): squeezenet, the only real weights measured, gained 11-13 points of Recall@1;
# every other model here runs seeded random weights, whose figures say nothing about its
# pretrained self, so they stay off until measured with real weights.
DEFAULT_RERANK: frozenset[str] = frozenset({"squeezenet"})


def default_rerank(model: str) -> bool:
    """Whether an image search with ``model`` re-ranks by default (``rerank`` not given)."""
    return model in DEFAULT_RERANK


class RerankInputError(ValueError):
    """The patch tokens or scores cannot be re-ranked; the message says why."""


@dataclass(frozen=True, slots=True)
class Reranked:
    scores: np.ndarray  # (K,) float32: the combined scores, in the candidates' input order
    local: np.ndarray  # (K,) float32: the local scores alone, in the same order
    order: np.ndarray  # (K,) int64: candidate indices, best combined score first


def local_scores(
    query_patches: np.ndarray, candidate_patches: Sequence[np.ndarray] | np.ndarray, method: Method = DEFAULT_METHOD
) -> np.ndarray:
    """One local score per candidate (see the module's docstring), float32 in input order."""
    if method not in METHODS:
        raise RerankInputError(f"unknown re-ranking method {method!r}; valid: {', '.join(METHODS)}")
    query = _normalised(_patch_matrix(query_patches, "the query's patches"))
    candidates = [_normalised(_patch_matrix(patches, f"candidate {index}'s patches"))
                  for index, patches in enumerate(candidate_patches)]
    for index, candidate in enumerate(candidates):
        if candidate.shape[1] != query.shape[1]:
            raise RerankInputError(f"candidate {index}'s patches have dimension {candidate.shape[1]}, "
                                   f"the query's {query.shape[1]}: they come from different models")
    scores = np.empty(len(candidates), dtype=np.float32)
    # A group of candidates per matrix product: one BLAS call for _GROUP candidates instead of
    # one each (a BLAS call per candidate spent most of its time starting threads on a busy CPU:
    # measured ad hoc on 2 loaded vCPUs: 160 ms against 19 ms for K = 20), and the
    # (query patches x group patches) matrix stays bounded however large K is.
    for start in range(0, len(candidates), _GROUP):
        group = candidates[start:start + _GROUP]
        similarity_all = query @ np.concatenate(group).T
        offset = 0
        for index, candidate in enumerate(group, start):
            similarity = similarity_all[:, offset:offset + candidate.shape[0]]
            offset += candidate.shape[0]
            if method == "maxsim":
                scores[index] = similarity.max(axis=1).mean()
            else:
                best_candidate = similarity.argmax(axis=1)  # per query patch
                best_query = similarity.argmax(axis=0)  # per candidate patch
                mutual = best_query[best_candidate] == np.arange(similarity.shape[0])
                scores[index] = mutual.mean()
    return scores


def combine(global_scores: np.ndarray, local: np.ndarray, weight: float = DEFAULT_WEIGHT) -> Reranked:
    """The weighted scores and the new order; `local` from `local_scores`."""
    if not 0.0 <= weight <= 1.0:  # NaN fails too
        raise RerankInputError(f"the re-ranking weight must be between 0 and 1, got {weight}")
    global_scores = np.asarray(global_scores, dtype=np.float32)
    local = np.asarray(local, dtype=np.float32)
    if global_scores.ndim != 1 or global_scores.shape != local.shape:
        raise RerankInputError(f"{global_scores.size} global score(s) for {local.size} candidate(s): "
                               "one global score per candidate is needed")
    if not np.isfinite(global_scores).all():
        raise RerankInputError("a global score is not a finite number")
    combined = ((1.0 - weight) * global_scores + weight * local).astype(np.float32)
    order = np.argsort(-combined, kind="stable")  # stable: ties keep stage one's order
    return Reranked(combined, local, order.astype(np.int64))


def rerank(
    global_scores: np.ndarray,
    query_patches: np.ndarray,
    candidate_patches: Sequence[np.ndarray] | np.ndarray,
    *,
    method: Method = DEFAULT_METHOD,
    weight: float = DEFAULT_WEIGHT,
) -> Reranked:
    """Stage two for K candidates given in stage one's order (best global score first)."""
    if len(global_scores) != len(candidate_patches):
        raise RerankInputError(f"{len(global_scores)} global score(s) for {len(candidate_patches)} candidate(s): "
                               "one global score per candidate is needed")
    return combine(np.asarray(global_scores), local_scores(query_patches, candidate_patches, method), weight)


def _patch_matrix(patches: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(patches, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise RerankInputError(f"{what} must be a non-empty (patches x dimension) matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise RerankInputError(f"{what} hold a value that is not a finite number")
    return array


def _normalised(patches: np.ndarray) -> np.ndarray:
    # An all-zero patch stays zero (cosine 0 with everything) instead of dividing by zero.
    norms = np.linalg.norm(patches, axis=1, keepdims=True)
    unit: np.ndarray = patches / np.maximum(norms, 1e-12)
    return unit

"""Stage 6 (when asked): re-rank the best K results by patch tokens (two-stage search).

Stage one ranked by the cosine of global vectors. Here the query image and each of
the best K results get their patch tokens (``EmbedPatches``, a few calls at a time)
and ``rerank.rerank()`` mixes the global and the local score. A result's bytes are
the ones the ranking kept, or are fetched again through the same downloader (a
gallery or cache hit was never downloaded in this search).

A result whose bytes or patches cannot be had is not re-ranked: it follows the
re-ranked ones, in stage one's order, with its global score. Its global score is
not comparable with the combined ones (the local part has another spread), and a
result we could not check should not outrank one we did; the reply shows which is
which (no ``local_score``).

When the query's own patches cannot be had, or the search's time budget ends first,
the results keep stage one's order and the caller marks the search partial.

Stored tokens (issue 23): a result the gallery keeps compact tokens for
(gallery/patch_tokens.py) is scored from those, nothing downloaded or embedded. With
``compute=False`` (re-ranking on by the model's default, not asked for) nothing else is
computed per search: a result without stored tokens keeps its global score and its place
(``local_score`` null, the caller says why in the reply's notes), and the re-ranked ones
are re-ordered among the places they held, so web results found by this search keep theirs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from search_gateway.clients.backends import EmbedClient
from search_gateway.errors import BackendUnavailable, GatewayError
from search_gateway.gallery.spaces import result_id
from search_gateway.search import rerank
from search_gateway.search.budget import Deadline
from search_gateway.search.download import CandidateDownloads
from search_gateway.search.ranking import order_score
from search_gateway.search.types import RankedResult

log = logging.getLogger(__name__)

# The most results one request may re-rank (rerank_k): one EmbedPatches call each.
RERANK_K_LIMIT = 100
# EmbedPatches calls of one search in flight at once: the embed server's batcher
# merges them, and a search must not fill its queue for everyone else.
CONCURRENCY = 4


@dataclasses.dataclass(frozen=True)
class Reranked:
    results: list[RankedResult]
    # Why stage one's order was kept; None when the results were re-ranked.
    error: str | None = None


async def rerank_results(
    results: list[RankedResult], *, embed: EmbedClient, downloads: CandidateDownloads, model: str,
    query_image: bytes, kept_bytes: Callable[[str], bytes | None], deadline: Deadline,
    query_patches: Awaitable[np.ndarray] | None = None,
    stored: Callable[[list[RankedResult]], Awaitable[Mapping[str, np.ndarray]]] | None = None,
    compute: bool = True,
) -> Reranked:
    """``results`` (stage one's order) re-ranked; unchanged with a reason when it cannot be done.
    ``query_patches``: the query's tokens already asked for (else asked here); ``stored``: the
    stored tokens of results by point id; ``compute``: also compute the others' tokens now."""
    if not results:
        return Reranked(results)
    limit = asyncio.Semaphore(CONCURRENCY)
    try:
        async with asyncio.timeout(max(0.0, deadline.remaining())):
            kept = dict(await stored(results)) if stored is not None else {}
            query_task = asyncio.ensure_future(
                _awaited(query_patches) if query_patches is not None
                else _patches(embed, model, query_image, limit, deadline))
            candidates = [asyncio.ensure_future(_stored_or_computed(
                r, kept, compute, embed, downloads, model, kept_bytes, limit, deadline)) for r in results]
            try:
                query = await query_task
                found = await asyncio.gather(*candidates)
            finally:
                for task in (query_task, *candidates):
                    task.cancel()
    except TimeoutError:
        return Reranked(results, "The time budget ran out before re-ranking finished; "
                                 "the results keep the global order.")
    except GatewayError as exc:
        log.warning("re-ranking failed: %s", exc.log_detail or exc)
        message = exc.message if isinstance(exc, BackendUnavailable) else "The query image's patches could not be computed."
        return Reranked(results, f"{message} The results keep the global order.")
    try:
        # Tens of ms of matrix products: on a worker thread, not the event loop every search shares.
        return Reranked(await asyncio.to_thread(_reordered if compute else _in_place, results, query, found))
    except rerank.RerankInputError as exc:  # e.g. patches of two dimensions: replicas serving other weights
        log.warning("re-ranking failed: %s", exc)
        return Reranked(results, "The patch tokens could not be compared. The results keep the global order.")


def _reordered(results: list[RankedResult], query: np.ndarray, found: list[np.ndarray | None]) -> list[RankedResult]:
    have = [i for i, patches in enumerate(found) if patches is not None]
    if not have:
        return results
    tokens = [found[i] for i in have]
    scored = rerank.rerank(np.array([results[i].score for i in have], dtype=np.float32), query,
                           [t for t in tokens if t is not None])
    reranked = [dataclasses.replace(results[have[j]], score=float(scored.scores[j]),
                                    global_score=results[have[j]].score, local_score=float(scored.local[j]))
                for j in scored.order]
    # A stale source goes after a live one of practically the same combined score, as in the
    # global order (ranking.order_score); the sort is stable, so ties keep stage two's order.
    reranked.sort(key=lambda r: -order_score(r))
    missing = [dataclasses.replace(r, global_score=r.score) for i, r in enumerate(results) if found[i] is None]
    return [*reranked, *missing]


def _in_place(results: list[RankedResult], query: np.ndarray, found: list[np.ndarray | None]) -> list[RankedResult]:
    """Re-ranked among the places the re-ranked results held; the others keep theirs and their score."""
    have = [i for i, patches in enumerate(found) if patches is not None]
    reranked = iter(_reordered([results[i] for i in have], query, [found[i] for i in have]))
    out = [next(reranked) if found[i] is not None else dataclasses.replace(r, global_score=r.score)
           for i, r in enumerate(results)]
    return out


async def _awaited(patches: Awaitable[np.ndarray]) -> np.ndarray:
    return await patches


def point_key(result: RankedResult) -> str:
    """The id a result's stored tokens are kept under: its gallery point's (a web result of
    this search: the one it has, or will have, in ``web``)."""
    return result.point_id or result_id(result.sha256)


async def _stored_or_computed(
    result: RankedResult, kept: Mapping[str, np.ndarray], compute: bool, embed: EmbedClient,
    downloads: CandidateDownloads, model: str, kept_bytes: Callable[[str], bytes | None], limit: asyncio.Semaphore,
    deadline: Deadline,
) -> np.ndarray | None:
    key = point_key(result)
    if key in kept:
        return kept[key]
    if not compute:
        return None
    return await _candidate_patches(result, embed, downloads, model, kept_bytes, limit, deadline)


async def _candidate_patches(
    result: RankedResult, embed: EmbedClient, downloads: CandidateDownloads, model: str,
    kept_bytes: Callable[[str], bytes | None], limit: asyncio.Semaphore, deadline: Deadline,
) -> np.ndarray | None:
    """The result's patch tokens, or None when its bytes or patches cannot be had."""
    try:
        data = kept_bytes(result.sha256)
        if data is None:
            if not result.candidate.url:  # an uploaded image: no URL to fetch it from
                return None
            async with limit:
                data = await downloads.refetch(result.candidate, deadline)
        return await _patches(embed, model, data, limit, deadline)
    except GatewayError as exc:
        log.info("not re-ranked, %s: %s", result.candidate.url, exc.log_detail or exc)
        return None


async def _patches(embed: EmbedClient, model: str, image: bytes, limit: asyncio.Semaphore,
                   deadline: Deadline) -> np.ndarray:
    async with limit:
        return (await embed.embed_patches(model, image, timeout=deadline.timeout(0.05))).tokens

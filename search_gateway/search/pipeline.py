"""The streaming search: gallery -> caption -> candidates -> downloads -> embedding in
batches -> ranking -> patch attention.

With ``gallery`` among the sources, the query's vector goes to the gallery first and
its best results are ranked (and streamed) before any web work is reported; every
web candidate the gallery already knows is neither downloaded nor embedded, and every
image embedded here is handed to the gallery's background writer. A gallery that
cannot answer makes the search ``partial`` with the reason, never a failure, unless
the gallery was the only source asked.

No stage waits for the previous one to finish: a download starts as soon as its
candidate arrives, an ``Embed`` batch leaves as soon as an embed slot is free and
images are waiting, and each vector is scored on arrival. When the time budget ends,
whatever has been ranked is returned, marked ``partial``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from search_gateway import requestid
from search_gateway.clients.backends import EmbedClient, ScraperClient
from search_gateway.clients.replies import Candidate, Provenance
from search_gateway.errors import BackendUnavailable, NotFound, storage_error
from search_gateway.gallery.base import GalleryError, VectorSpace
from search_gateway.gallery.spaces import result_id, space_of
from search_gateway.metrics import Metrics
from search_gateway.search import refine
from search_gateway.search.budget import Deadline
from search_gateway.search.cache import EmbeddingCache
from search_gateway.search.candidates import unique_candidates
from search_gateway.search.caption import FALLBACK_CAPTION, STYLES, SUBJECTS, CaptionChain, compose_query
from search_gateway.search.colour_filter import by_palette, passes
from search_gateway.search.download import CandidateDownloads
from search_gateway.search.embedding import EmbedBatches, Embedded, EmbedResult
from search_gateway.search.feedback_boost import FeedbackBoost, nudged
from search_gateway.search.gallery_source import GallerySource
from search_gateway.search.patch_attention import attach_attention
from search_gateway.search.query_vectors import QueryVectors
from search_gateway.search.ranking import Ranking
from search_gateway.search.rerank_stage import rerank_results
from search_gateway.search.tally import Stopwatch, Tally
from search_gateway.search.types import (
    CandidatesFound,
    CaptionReady,
    Downloaded,
    EmbeddedImage,
    FetchedImage,
    GalleryFound,
    RankedResult,
    RankedSoFar,
    Refinement,
    SearchEvent,
    SearchOutcome,
    SearchQuery,
)
from service_common.model_registry import text_models

log = logging.getLogger(__name__)

Emit = Callable[[SearchEvent], None]


@dataclass(frozen=True)
class SearchLimits:
    budget_s: float
    caption_timeout_s: float
    max_candidates: int
    attention_top: int


@dataclass(frozen=True)
class SearchPipeline:
    """Shared by all searches of one gateway: the backends, the stages and the cache."""

    limits: SearchLimits
    embed: EmbedClient
    scraper: ScraperClient
    captions: CaptionChain
    downloads: CandidateDownloads
    batches: EmbedBatches
    cache: EmbeddingCache
    metrics: Metrics
    # None when GATEWAY_GALLERY=off.
    gallery: GallerySource | None = None
    # Stored feedback marks nudging the results; None with GATEWAY_FEEDBACK=off or the gallery off.
    boost: FeedbackBoost | None = None
    # GATEWAY_REFINE_METHOD: how positive / negative marks refine a search (search/refine.py).
    refine_method: str = refine.ROCCHIO

    async def run(self, query: SearchQuery, emit: Emit | None = None) -> SearchOutcome:
        self.metrics.in_flight.inc()
        try:
            outcome = await _Search(self, query, emit or (lambda event: None)).run()
        except BaseException:
            self.metrics.searches.labels("failed").inc()
            raise
        finally:
            self.metrics.in_flight.dec()
        self.metrics.searches.labels("partial" if outcome.partial else "complete").inc()
        return outcome


class _Search:
    """One search: runs the stages and holds what they have produced so far."""

    def __init__(self, pipeline: SearchPipeline, query: SearchQuery, emit: Emit) -> None:
        self.pipeline = pipeline
        self.limits = pipeline.limits
        self.query = query
        self.emit = emit
        self.deadline = Deadline(self.limits.budget_s)
        self.tally = Tally(pipeline.metrics)
        self.stopwatch = Stopwatch(pipeline.metrics)
        self.ranking = Ranking(keep_bytes_of=max(self.limits.attention_top if query.include_attention else 0,
                                                 0 if query.rerank_stored_only else query.rerank_k))
        self.to_embed: asyncio.Queue[FetchedImage | None] = asyncio.Queue()
        self.query_vectors = QueryVectors(pipeline.embed, pipeline.cache, self.deadline)
        self.partial = False
        # The gallery space of the query's vector, once known; None when it has none.
        self.space: VectorSpace | None = None
        self.gallery_down = pipeline.gallery is None
        self.liked_tags: dict[str, float] = {}
        self.reranked = False
        # Why some re-ranked results kept their global score (issue 23), for the reply's notes.
        self.rerank_note: str | None = None
        self.marks: asyncio.Future[dict[str, float]] | None = None
        # Set when the search is refined by marked results (positive / negative).
        self.refiner: refine.Refiner | None = None

    async def run(self) -> SearchOutcome:
        try:
            return await self._run()
        finally:
            self.query_vectors.cancel_patches()
            if self.marks is not None:
                self.marks.cancel()  # a no-op once read; else the search failed before using it

    async def _run(self) -> SearchOutcome:
        query = self.query
        use_web = "web" in query.sources
        query_vector = await self._query_vector()
        # Stored feedback: read while the gallery and the web are searched, applied at the end.
        marks = self.marks = asyncio.ensure_future(self._marks(query_vector)) if self.pipeline.boost else None
        # The caption starts now (it may wait for the query's vector too) but is reported
        # after the gallery's answer: the gallery event comes before any web event.
        captioning = asyncio.ensure_future(self._caption()) if use_web else None
        try:
            if "gallery" in query.sources:
                await self._from_gallery(query_vector)
            if captioning is None:
                caption, source = "", "none"
            else:
                caption, source = await captioning
                self.emit(CaptionReady(caption, source))
        finally:
            if captioning is not None and not captioning.done():
                captioning.cancel()
        with_attention = bool(query.include_attention and query.image is not None)
        with_rerank = bool(query.rerank_k and query.image is not None)
        # Keep time for CrossAttention and re-ranking at the end when they were asked for.
        stage_reserve = min(3.0, self.limits.budget_s * 0.25)
        # Re-ranking from stored tokens takes tens of ms, not seconds (issue 23): less time kept back from the web.
        rerank_reserve = min(0.5, self.limits.budget_s * 0.05) if query.rerank_stored_only else stage_reserve
        reserve = stage_reserve * with_attention + rerank_reserve * with_rerank
        if use_web:
            await self._web(caption, query_vector, reserve)
        else:
            self.query_vectors.cancel()

        if marks is not None:
            self.ranking.rescore(nudged(self.ranking.best(len(self.ranking)), await marks))
        tally = self.tally
        if not len(self.ranking) and tally.embed_error and tally.embedded == 0 and tally.from_cache == 0:
            raise BackendUnavailable(tally.embed_error, backend="embed server")
        # The colour filter and the palette's order (search/colour_filter.py) apply to every
        # result, gallery and web alike, before the cut.
        keep = functools.partial(passes, color=query.color) if query.color else None
        order = functools.partial(by_palette, colour=query.palette) if query.palette else None
        if with_rerank:
            # Stage one's best K (more than max_results when K is larger), re-ranked, cut to size.
            results = (await self._rerank(self._best(max(query.max_results, query.rerank_k),
                                                     query.min_score, keep, order)))[: query.max_results]
        else:
            results = self._best(query.max_results, query.min_score, keep, order)
        if with_attention and results:
            results = await self._attention(results)
        return SearchOutcome(
            caption=caption, caption_source=source, results=tuple(results), model=query.model,
            patch_attention=with_attention, partial=self.partial, reranked=self.reranked,
            stats=tally.stats(ranked=len(self.ranking), duplicates=self.ranking.duplicates),
            timings_ms=self.stopwatch.finish(self.deadline.elapsed()),
            provenance=self.query_vectors.provenance(query.model),
            query_vector=_vector_of(query_vector),
            refinement=None if self.refiner is None else Refinement(
                self.refiner.ran, len(query.positive), len(query.negative)),
            notes=self._notes(),
        )

    async def _marks(self, query_vector: asyncio.Future[np.ndarray]) -> dict[str, float]:
        """Score changes from the tenant's marks of similar queries (search/feedback_boost.py)."""
        boost = self.pipeline.boost
        try:
            space = await self._query_space(query_vector)
        except Exception:  # the vector failed: the search reports that itself
            return {}
        if boost is None or space is None:
            return {}
        try:  # a store that hangs costs this search no more than its own budget
            async with asyncio.timeout(max(0.1, self.deadline.remaining())):
                return await boost.changes(space, await query_vector, self.query.tenant)
        except TimeoutError:
            return {}

    def _best(self, n: int, min_score: float | None = None, keep: Callable[[RankedResult], bool] | None = None,
              order: Callable[[list[RankedResult]], list[RankedResult]] | None = None) -> list[RankedResult]:
        """The best ``n`` results that ``keep`` keeps, in ``order`` (the colour filter's and the
        palette's); never a marked one (search/refine.py)."""
        if self.refiner is None:
            return self.ranking.best(n, min_score, keep, order)
        marked = len(self.query.positive) + len(self.query.negative)
        return self.refiner.unmarked(self.ranking.best(n + 2 * marked, min_score, keep, order))[:n]

    def _notes(self) -> tuple[str, ...]:
        """What the reply must explain about the filters it was asked for."""
        notes = [self.rerank_note] if self.rerank_note else []
        if self.query.placement:
            if self.query.model not in text_models():
                notes.append(f"{self.query.model} has no text tower, so its images have no body placement tags "
                             f"(only {', '.join(text_models())} do): the placement filter matched no gallery "
                             "image, and web results are not filtered by placement.")
            elif "web" in self.query.sources:
                notes.append("Body placement is read when an image is stored in the gallery: web results "
                             "found by this search are not filtered by placement.")
        return tuple(notes)

    async def _web(self, caption: str, query_vector: asyncio.Future[np.ndarray], reserve: float) -> None:
        collect = asyncio.ensure_future(self._collect(caption, query_vector))
        try:
            async with asyncio.timeout(max(0.0, self.deadline.remaining() - reserve)):
                # The query vector failing (embed server down) ends the search at once.
                first: set[asyncio.Future[Any]] = {collect, query_vector}
                done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
                if query_vector in done and (error := query_vector.exception()) is not None:
                    raise error
                await collect
        except TimeoutError:
            self.partial = True
        finally:
            collect.cancel()
            await asyncio.gather(collect, return_exceptions=True)
            self.query_vectors.cancel()

    # --- the query's vector and caption
    async def _query_vector(self) -> asyncio.Future[np.ndarray]:
        query = self.query
        base: asyncio.Future[np.ndarray] | None = None
        if query.like is not None:
            base = await self._liked(query.like)
        elif query.text is not None:
            base = self.query_vectors.of_text(query.model, query.text)
        elif query.image is not None:
            base = self.query_vectors.of_image(query.model, query.image)
            if query.rerank_k:  # the query's patch tokens, in parallel with its vector (issue 23)
                self.query_vectors.patches_of(query.model, query.image)
        if query.positive or query.negative:
            return await self._refined(base)
        assert base is not None
        return base

    async def _refined(self, base: asyncio.Future[np.ndarray] | None) -> asyncio.Future[np.ndarray]:
        """The query moved by the marked results (search/refine.py): their stored vectors,
        in the model's current space; with marks alone, the web query is their tags."""
        self.space, marked = await refine.resolve(self.pipeline.gallery, self.query)
        self.refiner = refine.Refiner(self.pipeline.refine_method, marked, None if base is None else await base)
        if base is None:
            self.liked_tags = marked.tags()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        future.set_result(self.refiner.vector)
        return future

    async def _liked(self, id: str) -> asyncio.Future[np.ndarray]:
        """The stored vector of gallery point ``id``: nothing downloaded, nothing embedded."""
        gallery = self.pipeline.gallery
        if gallery is None:
            raise NotFound("The gallery is off on this gateway (GATEWAY_GALLERY=off), so 'like' finds nothing.")
        try:
            found = await gallery.like(self.query.model, id, self.query.tenant)
        except GalleryError as exc:
            raise storage_error(exc) from exc
        if found is None:
            raise NotFound(f"No gallery image {id!r} for model {self.query.model!r} with the weights it serves now.")
        space, point = found
        self.space = space
        self.liked_tags = dict(point.tags)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        future.set_result(np.asarray(point.vector, dtype=np.float32))
        return future

    async def _caption(self) -> tuple[str, str]:
        query, start = self.query, time.monotonic()
        if query.like is not None or (query.text is None and query.image is None):  # like, or marks alone
            caption = (_caption_from_tags(self.liked_tags), "tags")
        elif query.text is not None:
            caption = (query.text, "text")
        else:
            assert query.image is not None
            captions = self.pipeline.captions
            wanted = captions.vector_model
            caption = await captions.caption(
                query.image.embed_bytes, self.query_vectors.of_image(wanted, query.image) if wanted else None,
                timeout=max(0.05, min(self.limits.caption_timeout_s, self.deadline.remaining() / 3)),
            )
            if wanted and wanted != query.model:
                self.query_vectors.cancel(wanted)  # the captioner's alone: not needed any more
        self.stopwatch.mark("caption", start)
        return caption

    # --- the gallery
    async def _query_space(self, query_vector: asyncio.Future[np.ndarray]) -> VectorSpace | None:
        """The space of the query's vector (from its embed reply's provenance)."""
        vector = await query_vector
        if self.space is None:
            self.space = space_of(self.query.model, self.query_vectors.provenance(self.query.model), vector.shape[0])
        return self.space

    async def _from_gallery(self, query_vector: asyncio.Future[np.ndarray]) -> None:
        gallery, query, start = self.pipeline.gallery, self.query, time.monotonic()
        if gallery is None:
            return
        space = await self._query_space(query_vector)
        found: list[RankedResult] = []
        error = None
        if space is not None:
            limit = max(query.max_results, query.rerank_k)
            try:
                if self.refiner is not None:
                    found = await self.refiner.find(lambda examples, vector, wanted: gallery.find(
                        space, vector, tenant=query.tenant, collections=query.collections, limit=wanted,
                        tags=query.tags, min_score=None if examples else query.min_score, examples=examples,
                        color=query.color, placement=query.placement), limit)
                else:
                    found = await gallery.find(space, await query_vector, tenant=query.tenant,
                                               collections=query.collections, limit=limit,
                                               tags=query.tags, min_score=query.min_score, color=query.color,
                                               placement=query.placement)
            except GalleryError as exc:
                error = self._gallery_failed(exc)
        if query.like is not None:
            found = [r for r in found if (r.point_id or result_id(r.sha256)) != query.like]  # not "like itself"
        for result in found:
            self.ranking.add_ranked(result)
        self.tally.from_gallery = len(found)
        self.stopwatch.mark("gallery", start)
        self.emit(GalleryFound(tuple(found), error))
        if error is not None and "web" not in query.sources:
            raise BackendUnavailable(error, backend="gallery")

    def _gallery_failed(self, exc: GalleryError) -> str:
        """The sentence the reply carries (the store's own text, with its address, is logged)."""
        # Asked no more in this search: one sentence in the reply, not a hundred failing calls.
        error = storage_error(exc).message
        if not self.gallery_down:
            log.warning("search %s: the gallery failed: %s", requestid.current(), exc)
        self.gallery_down = True
        self.tally.gallery_error = error
        self.partial = True
        return error

    # --- candidates, downloads, embedding, ranking
    async def _collect(self, caption: str, query_vector: asyncio.Future[np.ndarray]) -> None:
        embedding = asyncio.ensure_future(self.pipeline.batches.run(
            self.query.model, self.to_embed, self.deadline, self.stopwatch,
            lambda result: self._rank_embedded(result, query_vector)))
        downloads: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        try:
            try:
                async for candidate in unique_candidates(self.pipeline.scraper, caption, self.limits.max_candidates,
                                                         timeout=self.deadline.remaining()):
                    self.tally.candidates_found += 1
                    if self.tally.candidates_found == 1:
                        self.stopwatch.mark("first_candidate", start)
                    self.emit(CandidatesFound(self.tally.candidates_found))
                    downloads.add(asyncio.ensure_future(self._take(candidate, query_vector)))
            except BackendUnavailable as exc:
                if self.tally.candidates_found == 0:
                    raise
                # Candidates already in hand are still worth ranking.
                log.warning("scraper stream ended early: %s", exc.log_detail or exc.message)
                self.tally.scraper_error = exc.message
                self.partial = True
            self.stopwatch.mark("scrape", start)
            if downloads:
                await asyncio.gather(*downloads)
        finally:
            for task in downloads:
                task.cancel()
            await self.to_embed.put(None)
        await embedding

    async def _take(self, candidate: Candidate, query_vector: asyncio.Future[np.ndarray]) -> None:
        """From the cache, or downloaded and queued for embedding. Never raises: failures are counted."""
        model, cache = self.query.model, self.pipeline.cache
        hit = cache.by_url(model, candidate.url)
        if hit is not None:
            sha256, cached = hit
            self.tally.from_cache += 1
            self.ranking.add(EmbeddedImage(candidate, sha256, cached.vector, None, colour=cached.colour),
                             await query_vector)
            return
        if await self._known_to_gallery(candidate, query_vector):
            return
        known = self.pipeline.downloads.known_failure(candidate.url)
        if known is not None:  # failed recently: counted as failed again, not fetched again
            self.tally.skip(known)
            return
        self.stopwatch.span("download")
        fetched = await self.pipeline.downloads.fetch(candidate, self.deadline)
        if not isinstance(fetched, FetchedImage):
            self.tally.fail(fetched.reason)
            return
        self.stopwatch.span("download")
        self.tally.downloaded += 1
        self.pipeline.metrics.downloads.inc()
        self.emit(Downloaded(self.tally.downloaded, self.tally.failed))
        same_picture = cache.by_hash(model, fetched.sha256)
        if same_picture is not None:  # seen before at another URL
            cache.remember_url(model, candidate.url, fetched.sha256)
            self.tally.from_cache += 1
            embedded = EmbeddedImage(candidate, fetched.sha256, same_picture.vector, fetched.image.embed_bytes,
                                     size=(fetched.image.width, fetched.image.height),
                                     colour=fetched.image.colour or same_picture.colour)
            self.ranking.add(embedded, await query_vector)
            self._remember(same_picture.provenance, (embedded,))  # a new URL of it, at least
            return
        await self.to_embed.put(fetched)

    async def _known_to_gallery(self, candidate: Candidate, query_vector: asyncio.Future[np.ndarray]) -> bool:
        """Ranked from the gallery (scored by its store) when it already knows this URL."""
        gallery = self.pipeline.gallery
        if gallery is None or self.gallery_down:
            return False
        space = await self._query_space(query_vector)
        if space is None:
            return False
        try:
            known = await gallery.known_url(space, await query_vector, candidate.url)
        except GalleryError as exc:
            self._gallery_failed(exc)
            return False
        if known is None:
            return False
        self.tally.gallery_known += 1
        # The candidate as this search found it (its page and headers), the score from the store.
        self.ranking.add_ranked(replace(known, candidate=candidate))
        return True

    async def _rank_embedded(self, result: EmbedResult, query_vector: asyncio.Future[np.ndarray]) -> None:
        if not isinstance(result, Embedded):
            for _ in result.images:
                self.tally.fail(result.reason)
            if result.error is not None:  # the embed server failed, not the images
                self.tally.embed_error = result.error
                self.partial = True
            return
        vector = await query_vector
        for embedded in result.images:
            self.tally.embedded += 1
            self.ranking.add(embedded, vector)
        self._remember(result.provenance, result.images)

    def _remember(self, provenance: Provenance | None, images: Sequence[EmbeddedImage]) -> None:
        """Hand web images to the gallery's background writer, in the space of who embedded them."""
        gallery = self.pipeline.gallery
        if gallery is not None and images:
            space = space_of(self.query.model, provenance, images[0].vector.shape[0])
            if space is not None:
                gallery.remember(space, images)
        self.emit(RankedSoFar(len(self.ranking), tuple((r.candidate.url, r.score) for r in self._best(5))))

    # --- re-ranking by patch tokens
    async def _rerank(self, results: list[RankedResult]) -> list[RankedResult]:
        start = time.monotonic()
        k = self.query.rerank_k
        assert self.query.image is not None
        done = await rerank_results(
            results[:k], embed=self.pipeline.embed, downloads=self.pipeline.downloads, model=self.query.model,
            query_image=self.query.image.embed_bytes, kept_bytes=self.ranking.kept_bytes, deadline=self.deadline,
            query_patches=self.query_vectors.patches_of(self.query.model, self.query.image),
            stored=self._stored_tokens, compute=not self.query.rerank_stored_only)
        without = sum(1 for r in done.results if r.local_score is None)
        if done.error is None and without:
            self.rerank_note = (f"{without} of the {len(done.results)} re-ranked results have no patch tokens "
                                + ("stored in the gallery yet (a web result of this search, or a point the "
                                   "backfill has not reached)" if self.query.rerank_stored_only
                                   else "(their image could not be fetched or embedded)")
                                + ": they keep their global score (local_score null).")
        if done.error is not None:
            self.tally.rerank_error = done.error
            self.partial = True
        else:  # none of them could be fetched: nothing was re-ranked
            self.reranked = any(r.local_score is not None for r in done.results)
        self.stopwatch.mark("rerank", start)
        return [*done.results, *results[k:]]

    async def _stored_tokens(self, results: list[RankedResult]) -> dict[str, np.ndarray]:
        """The results' patch tokens the gallery stores (gallery/patch_tokens.py), by point id."""
        gallery = self.pipeline.gallery
        if gallery is None or self.gallery_down or self.space is None:
            return {}
        return await gallery.stored_tokens(self.space, results, self.query.tenant)

    # --- patch attention
    async def _attention(self, results: list[RankedResult]) -> list[RankedResult]:
        start = time.monotonic()
        top, rest = results[: self.limits.attention_top], results[self.limits.attention_top:]
        assert self.query.image is not None
        top, error = await attach_attention(
            top, embed=self.pipeline.embed, downloads=self.pipeline.downloads, model=self.query.model,
            query_image=self.query.image.embed_bytes, kept_bytes=self.ranking.kept_bytes, deadline=self.deadline)
        if error is not None:
            self.tally.attention_error = error
            self.partial = True
        self.stopwatch.mark("attention", start)
        return [*top, *rest]


def _vector_of(future: asyncio.Future[np.ndarray]) -> np.ndarray | None:
    return future.result() if future.done() and not future.cancelled() and future.exception() is None else None


def _caption_from_tags(tags: dict[str, float]) -> str:
    """A web query for "more like this" from the stored image's machine tags."""
    style = max((t for t in tags if t in STYLES), key=lambda t: tags[t], default=None)
    subject = max((t for t in tags if t in SUBJECTS), key=lambda t: tags[t], default=None)
    if style and subject:
        return compose_query(style, subject)
    return f"{style or subject} tattoo" if (style or subject) else FALLBACK_CAPTION

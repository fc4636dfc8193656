"""The streaming search: caption -> scraper stream -> downloads -> batched Embed -> ranking.

No stage waits for the previous one to finish: a download starts as soon as its
candidate arrives, an ``Embed`` batch leaves as soon as an embed slot is free and
images are waiting, and each vector is scored on arrival. When the time budget ends,
whatever has been ranked is returned, marked ``partial``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_gateway import attention
from search_gateway.backends import BackendRejected, EmbedClient, ScraperClient
from search_gateway.cache import EmbeddingCache
from search_gateway.caption import CaptionChain
from search_gateway.config import GatewaySettings
from search_gateway.downloader import Downloader
from search_gateway.errors import BackendUnavailable, DownloadFailed, GatewayError
from search_gateway.failed_downloads import FailedDownloads
from search_gateway.images import PreparedImage, prepare
from search_gateway.metrics import Metrics
from tattoo_search.v1 import scraper_pb2

log = logging.getLogger(__name__)

PLATFORM_NAMES = {
    scraper_pb2.PLATFORM_PINTEREST: "pinterest",
    scraper_pb2.PLATFORM_REDDIT: "reddit",
    scraper_pb2.PLATFORM_INSTAGRAM: "instagram",
    scraper_pb2.PLATFORM_OTHER: "other",
}

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchQuery:
    model: str
    max_results: int
    include_attention: bool
    image: PreparedImage | None = None
    text: str | None = None


@dataclass(frozen=True)
class Candidate:
    url: str
    source_url: str
    platform: str
    title: str
    engine: str
    headers: dict[str, str]

    @classmethod
    def from_proto(cls, c: scraper_pb2.Candidate) -> Candidate:
        return cls(
            url=c.image_url, source_url=c.source_url, platform=PLATFORM_NAMES.get(c.platform, "other"),
            title=c.title, engine=c.engine, headers={h.name: h.value for h in c.request_headers},
        )


@dataclass
class Ranked:
    candidate: Candidate
    sha256: str
    score: float


@dataclass
class _Item:
    candidate: Candidate
    image: PreparedImage


@dataclass
class _Stats:
    candidates_found: int = 0
    from_cache: int = 0
    downloaded: int = 0
    embedded: int = 0
    ranked: int = 0
    duplicates: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    scraper_error: str | None = None
    embed_error: str | None = None
    attention_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "candidates_found": self.candidates_found, "from_cache": self.from_cache,
            "downloaded": self.downloaded, "embedded": self.embedded, "ranked": self.ranked,
            "duplicates": self.duplicates, "failed": sum(self.failed.values()),
            "failed_by_reason": dict(self.failed),
        }
        for name in ("scraper_error", "embed_error", "attention_error"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


class SearchPipeline:
    """Shared by all searches of one gateway: the clients, the downloader and the cache."""

    def __init__(self, *, settings: GatewaySettings, embed: EmbedClient, scraper: ScraperClient,
                 downloader: Downloader, captions: CaptionChain, cache: EmbeddingCache, metrics: Metrics,
                 failures: FailedDownloads | None = None) -> None:
        self.settings = settings
        self.embed = embed
        self.scraper = scraper
        self.downloader = downloader
        self.captions = captions
        self.cache = cache
        self.metrics = metrics
        self.failures = failures
        # Bounds the embed calls in flight across all searches, so that one big search
        # cannot queue the embed server full for everyone else.
        self.embed_slots = asyncio.Semaphore(max(1, settings.embed_concurrency * 2))

    async def prepare_image(self, data: bytes, label: str, *, full_check: bool = True) -> PreparedImage:
        s = self.settings
        return await asyncio.to_thread(
            prepare, data, max_pixels=s.max_pixels, short_side=s.embed_image_side, label=label, full_check=full_check
        )

    async def run(self, query: SearchQuery, emit: Emit | None = None) -> dict[str, Any]:
        """One search; returns the response body (without thumbnail links)."""
        self.metrics.in_flight.inc()
        try:
            body = await _Run(self, query, emit or (lambda event: None)).execute()
        except BaseException:
            self.metrics.searches.labels("failed").inc()
            raise
        finally:
            self.metrics.in_flight.dec()
        self.metrics.searches.labels("partial" if body["partial"] else "complete").inc()
        return body


class _Run:
    """The state of one search."""

    def __init__(self, pipeline: SearchPipeline, query: SearchQuery, emit: Emit) -> None:
        self.p = pipeline
        self.s = pipeline.settings
        self.q = query
        self.emit = emit
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.s.search_budget_s
        self.stats = _Stats()
        self.timings: dict[str, float] = {}
        self.ranked: dict[str, Ranked] = {}
        self.seen_urls: set[str] = set()
        # Embed-ready bytes of the current best few, for CrossAttention at the end.
        self.keep: dict[str, bytes] = {}
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.vectors: dict[str, asyncio.Task[np.ndarray]] = {}
        self.partial = False
        self._stage_start: dict[str, float] = {}

    # --- bookkeeping
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _mark(self, stage: str, start: float) -> None:
        seconds = time.monotonic() - start
        self.timings[f"{stage}_ms"] = round(seconds * 1000, 1)
        self.p.metrics.stage(stage, seconds)

    def _span(self, stage: str) -> None:
        """Extend a stage that many tasks share: first start to last end."""
        now = time.monotonic()
        start = self._stage_start.setdefault(stage, now)
        self.timings[f"{stage}_ms"] = round((now - start) * 1000, 1)

    def _fail(self, reason: str, url: str | None = None) -> None:
        self.stats.failed[reason] += 1
        self.p.metrics.download_failed(reason)
        # A timeout because this search's own budget ran out says nothing about the URL.
        if url is not None and self.p.failures is not None and self.remaining() > 0:
            self.p.failures.remember(url, reason)

    # --- vectors
    def image_vector(self, model: str) -> asyncio.Future[np.ndarray]:
        """The query image's vector for ``model``, computed once and shared (captioner, ranking)."""
        task = self.vectors.get(model)
        if task is None:
            assert self.q.image is not None
            task = asyncio.ensure_future(self._embed_one(model, self.q.image))
            self.vectors[model] = task
        return asyncio.shield(task)

    async def _embed_one(self, model: str, image: PreparedImage) -> np.ndarray:
        cached = self.p.cache.by_hash(model, image.sha256)
        if cached is not None:
            return cached
        vector = _unit((await self.p.embed.embed(model, [image.embed_bytes], timeout=self.remaining()))[0])
        self.p.cache.put(model, image.sha256, vector)
        return vector

    async def _text_vector(self, text: str) -> np.ndarray:
        return _unit((await self.p.embed.embed_text(self.q.model, [text], timeout=self.remaining()))[0])

    # --- the search
    async def execute(self) -> dict[str, Any]:
        q = self.q
        start = time.monotonic()
        if q.text is not None:
            query_vector: asyncio.Future[np.ndarray] = asyncio.ensure_future(self._text_vector(q.text))
            caption, source = q.text, "text"
        else:
            assert q.image is not None
            query_vector = self.image_vector(q.model)
            caption, source = await self.p.captions.caption(
                q.image.embed_bytes, self.image_vector,
                timeout=max(0.05, min(self.s.caption_timeout_s, self.remaining() / 3)),
            )
        self._mark("caption", start)
        self.emit({"event": "caption", "caption": caption, "caption_source": source})

        # Keep time for CrossAttention at the end when it was asked for.
        reserve = min(3.0, self.s.search_budget_s * 0.25) if (q.include_attention and q.image) else 0.0
        collect = asyncio.ensure_future(self._collect(caption, query_vector))
        try:
            async with asyncio.timeout(max(0.0, self.remaining() - reserve)):
                # The query vector failing (embed server down) ends the search at once.
                done, _ = await asyncio.wait({collect, query_vector}, return_when=asyncio.FIRST_COMPLETED)
                if query_vector in done and query_vector.exception() is not None:
                    raise query_vector.exception()  # type: ignore[misc]
                await collect
        except TimeoutError:
            self.partial = True
        finally:
            collect.cancel()
            await asyncio.gather(collect, return_exceptions=True)
            if not query_vector.done():
                query_vector.cancel()
            for task in self.vectors.values():
                if not task.done():
                    task.cancel()

        if not self.ranked and self.stats.embed_error and self.stats.embedded == 0 and self.stats.from_cache == 0:
            raise BackendUnavailable(self.stats.embed_error, backend="embed server")
        results = self._top()
        patch_attention = bool(q.include_attention and q.image is not None)
        if patch_attention and results:
            await self._attach_attention(results)
        for stage in ("download", "embedding"):  # spans shared by many tasks: observed once
            if f"{stage}_ms" in self.timings:
                self.p.metrics.stage(stage, self.timings[f"{stage}_ms"] / 1000)
        self.timings["total_ms"] = round((time.monotonic() - self.t0) * 1000, 1)
        self.p.metrics.stage("total", time.monotonic() - self.t0)
        return {
            "caption": caption,
            "caption_source": source,
            "results": results,
            "embedding_model": q.model,
            "patch_attention_enabled": patch_attention,
            "partial": self.partial,
            "stats": self.stats.as_dict(),
            "timings": self.timings,
        }

    async def _collect(self, caption: str, query_vector: asyncio.Future[np.ndarray]) -> None:
        batcher = asyncio.ensure_future(self._batcher(query_vector))
        downloads: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        try:
            try:
                async for proto in self.p.scraper.search(caption, self.s.max_candidates, timeout=self.remaining()):
                    candidate = Candidate.from_proto(proto)
                    if not candidate.url or candidate.url in self.seen_urls:
                        continue
                    self.seen_urls.add(candidate.url)
                    self.stats.candidates_found += 1
                    if self.stats.candidates_found == 1:
                        self._mark("first_candidate", start)
                    self.emit({"event": "candidates", "found": self.stats.candidates_found})
                    downloads.add(asyncio.ensure_future(self._acquire(candidate, query_vector)))
                    if self.stats.candidates_found >= self.s.max_candidates:
                        break
            except BackendUnavailable as exc:
                if self.stats.candidates_found == 0:
                    raise
                # Candidates already in hand are still worth ranking.
                log.warning("scraper stream ended early: %s", exc.log_detail or exc.message)
                self.stats.scraper_error = exc.message
                self.partial = True
            self._mark("scrape", start)
            if downloads:
                await asyncio.gather(*downloads)
        finally:
            for task in downloads:
                task.cancel()
            await self.queue.put(None)
        await batcher

    async def _acquire(self, candidate: Candidate, query_vector: asyncio.Future[np.ndarray]) -> None:
        """Cache, or download + check + queue for embedding. Never raises (failures are counted)."""
        model = self.q.model
        hit = self.p.cache.by_url(model, candidate.url)
        if hit is not None:
            sha, vector = hit
            self.stats.from_cache += 1
            self._add(candidate, sha, vector, await query_vector, None)
            return
        known = self.p.failures.reason(candidate.url) if self.p.failures is not None else None
        if known is not None:  # failed recently: counted as failed again, not fetched again
            self.stats.failed[known] += 1
            return
        self._span("download")
        try:
            data = await self.p.downloader.fetch(candidate.url, candidate.headers, timeout=max(0.01, self.remaining()))
            image = await self.p.prepare_image(data, "candidate image", full_check=False)
        except DownloadFailed as exc:
            self._fail(exc.reason, candidate.url)
            return
        except GatewayError as exc:  # not an image, truncated, pixel bomb, empty
            self._fail(exc.code, candidate.url)
            return
        self._span("download")
        self.stats.downloaded += 1
        self.p.metrics.downloads.inc()
        self.emit({"event": "downloaded", "downloaded": self.stats.downloaded, "failed": sum(self.stats.failed.values())})
        cached = self.p.cache.by_hash(model, image.sha256)
        if cached is not None:
            self.p.cache.remember_url(model, candidate.url, image.sha256)
            self.stats.from_cache += 1
            self._add(candidate, image.sha256, cached, await query_vector, image.embed_bytes)
            return
        await self.queue.put(_Item(candidate, image))

    async def _batcher(self, query_vector: asyncio.Future[np.ndarray]) -> None:
        """Take what is waiting whenever an embed slot frees: batches grow under load by themselves."""
        local = asyncio.Semaphore(self.s.embed_concurrency)
        running: set[asyncio.Task[None]] = set()
        done = False
        try:
            while not done:
                await local.acquire()
                first = await self.queue.get()
                if first is None:
                    local.release()
                    break
                batch, size = [first], len(first.image.embed_bytes)
                wait_until = time.monotonic() + self.s.embed_batch_wait_ms / 1000
                while len(batch) < self.s.embed_batch and size < self.s.embed_batch_bytes:
                    try:
                        item = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        # Wait a moment for stragglers: a batch of 8 costs far less than 8 of 1.
                        left = wait_until - time.monotonic()
                        if left <= 0:
                            break
                        try:
                            item = await asyncio.wait_for(self.queue.get(), left)
                        except TimeoutError:
                            break
                    if item is None:
                        done = True
                        break
                    batch.append(item)
                    size += len(item.image.embed_bytes)
                task = asyncio.ensure_future(self._embed_batch(batch, query_vector))
                running.add(task)
                task.add_done_callback(lambda t: (running.discard(t), local.release()))
            if running:
                await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()

    async def _embed_batch(self, batch: list[_Item], query_vector: asyncio.Future[np.ndarray]) -> None:
        model = self.q.model
        self._span("embedding")
        try:
            async with self.p.embed_slots:
                vectors = await self.p.embed.embed(model, [i.image.embed_bytes for i in batch], timeout=max(0.01, self.remaining()))
        except BackendRejected:
            # One bad image fails the whole request; find it by sending them one by one.
            if len(batch) > 1:
                for item in batch:
                    await self._embed_batch([item], query_vector)
            else:
                self._fail("rejected_by_embed_server")
            return
        except BackendUnavailable as exc:
            log.warning("embed batch failed: %s", exc.log_detail or exc.message)
            self.stats.embed_error = exc.message
            self.p.metrics.backend_errors.labels("embed").inc()
            for _ in batch:
                self._fail("embed_unavailable")
            self.partial = True
            return
        self._span("embedding")
        qv = await query_vector
        for item, vector in zip(batch, vectors, strict=True):
            vector = _unit(vector)
            self.p.cache.put(model, item.image.sha256, vector, item.candidate.url)
            self.stats.embedded += 1
            self._add(item.candidate, item.image.sha256, vector, qv, item.image.embed_bytes)
        best = sorted(self.ranked.values(), key=lambda r: -r.score)[:5]
        self.emit({"event": "ranked", "ranked": self.stats.ranked,
                   "best": [{"url": r.candidate.url, "score": round(r.score, 6)} for r in best]})

    def _add(self, candidate: Candidate, sha: str, vector: np.ndarray, query_vector: np.ndarray, data: bytes | None) -> None:
        if sha in self.ranked:
            # The same picture at another URL: one result is enough.
            self.stats.duplicates += 1
            return
        score = float(np.dot(vector, query_vector))
        self.ranked[sha] = Ranked(candidate, sha, score)
        self.stats.ranked += 1
        keep_n = self.s.attention_top if self.q.include_attention else 0
        if data is not None and keep_n:
            self.keep[sha] = data
            if len(self.keep) > keep_n:
                worst = min(self.keep, key=lambda k: self.ranked[k].score)
                del self.keep[worst]

    def _top(self) -> list[dict[str, Any]]:
        best = sorted(self.ranked.values(), key=lambda r: -r.score)[: self.q.max_results]
        return [
            {
                "url": r.candidate.url, "source_url": r.candidate.source_url, "platform": r.candidate.platform,
                "title": r.candidate.title, "engine": r.candidate.engine, "score": round(r.score, 6),
                "_sha256": r.sha256, "_headers": r.candidate.headers,
            }
            for r in best
        ]

    async def _attach_attention(self, results: list[dict[str, Any]]) -> None:
        start = time.monotonic()
        top = results[: self.s.attention_top]
        try:
            images = []
            for result in top:
                data = self.keep.get(result["_sha256"])
                if data is None:  # ranked from the cache: fetch it again
                    raw = await self.p.downloader.fetch(result["url"], result["_headers"], timeout=max(0.01, self.remaining()))
                    data = (await self.p.prepare_image(raw, "candidate image", full_check=False)).embed_bytes
                images.append(data)
            assert self.q.image is not None
            reply = await self.p.embed.cross_attention(
                self.q.model, self.q.image.embed_bytes, images, top_k=1, timeout=max(0.05, self.remaining()))
            for result, cand in zip(top, reply.candidates, strict=True):
                result["patch_attention"] = attention.summarize(reply.query_grid_height, reply.query_grid_width, cand)
        except (GatewayError, ValueError) as exc:
            # The reply says what failed in plain words (a download's message names its
            # URL, a ValueError's text is internal); the detail goes to the log.
            log.warning("patch attention failed: %s", getattr(exc, "log_detail", None) or exc)
            self.stats.attention_error = (exc.message if isinstance(exc, BackendUnavailable)
                                          else "Patch attention could not be computed for the top results.")
            self.partial = True
        self._mark("attention", start)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)

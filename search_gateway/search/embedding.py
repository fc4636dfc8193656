"""Stage 3: fetched images -> unit vectors, in batches that form by themselves.

A batch leaves when one of this search's embed slots is free and images are waiting
(after a short wait for stragglers), so batches stay small while the embed server
keeps up and grow when it does not. All searches share a bound on the embed calls in
flight, so one big search cannot fill the embed server's queue for everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from search_gateway.clients.backends import BackendRejected, EmbedClient
from search_gateway.clients.embed_calls import embed_or_each_alone
from search_gateway.clients.replies import Embeddings, Provenance
from search_gateway.clients.weights_watch import unverify_on_reconnect
from search_gateway.errors import BackendUnavailable
from search_gateway.metrics import Metrics
from search_gateway.search.budget import Deadline
from search_gateway.search.cache import EmbeddingCache
from search_gateway.search.tally import Stopwatch
from search_gateway.search.types import EmbeddedImage, FetchedImage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLimits:
    max_images: int
    max_bytes: int
    straggler_wait_s: float
    concurrency: int  # embed calls in flight per search


@dataclass(frozen=True)
class Embedded:
    images: tuple[EmbeddedImage, ...]
    # Who computed them: the gallery keeps them in that model's and weights' space.
    provenance: Provenance | None = None


@dataclass(frozen=True)
class NotEmbedded:
    images: tuple[FetchedImage, ...]
    reason: str  # the failure label each image is counted under
    error: str | None = None  # a sentence for the reply when the embed server failed


EmbedResult = Embedded | NotEmbedded
# Where each Embed call's result goes; the call's embed slot is held until it returns.
Report = Callable[[EmbedResult], Awaitable[None]]


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class EmbedBatches:
    """Shared by all searches: the client, the cache and the gateway-wide embed slots.
    Made on the gateway's event loop: it starts the cache's watch on the embed channel."""

    def __init__(self, embed: EmbedClient, cache: EmbeddingCache, limits: BatchLimits, metrics: Metrics) -> None:
        self._embed = embed
        self._cache = cache
        self._limits = limits
        self._metrics = metrics
        self._slots = asyncio.Semaphore(max(1, limits.concurrency * 2))
        # For the channel's life: an embed server restart may bring other weights, which
        # the cache must not answer for with its old vectors (weights_watch.py). Kept
        # here, as asyncio keeps only a weak reference to a task.
        self._weights_watch = asyncio.get_running_loop().create_task(unverify_on_reconnect(embed.channel, cache))
        # ListModels names the weights too (the catalog asks before searches, every few
        # seconds at most): that covers a restart the channel cannot see, behind a proxy.
        embed.weights_listeners.append(cache.observe)

    async def run(self, model: str, waiting: asyncio.Queue[FetchedImage | None], deadline: Deadline,
                  stopwatch: Stopwatch, report: Report) -> None:
        """Embed what arrives on ``waiting`` until its None, reporting every call's result."""
        own_slots = asyncio.Semaphore(self._limits.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await own_slots.acquire()
                batch, last = await self._next_batch(waiting)
                if batch:
                    task = asyncio.ensure_future(self._embed_batch(model, batch, deadline, stopwatch, report))
                    running.add(task)

                    def finished(task: asyncio.Task[None]) -> None:
                        running.discard(task)
                        own_slots.release()

                    task.add_done_callback(finished)
                else:
                    own_slots.release()
                if last:
                    break
            if running:
                await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()

    async def _next_batch(self, waiting: asyncio.Queue[FetchedImage | None]) -> tuple[list[FetchedImage], bool]:
        """The images waiting now (one at least), and whether the queue has ended."""
        first = await waiting.get()
        if first is None:
            return [], True
        batch, size = [first], len(first.image.embed_bytes)
        wait_until = time.monotonic() + self._limits.straggler_wait_s
        while len(batch) < self._limits.max_images and size < self._limits.max_bytes:
            try:
                item = waiting.get_nowait()
            except asyncio.QueueEmpty:
                # Wait a moment for stragglers: a batch of 8 costs far less than 8 of 1.
                left = wait_until - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(waiting.get(), left)
                except TimeoutError:
                    break
            if item is None:
                return batch, True
            batch.append(item)
            size += len(item.image.embed_bytes)
        return batch, False

    async def _embed_batch(self, model: str, batch: list[FetchedImage], deadline: Deadline,
                           stopwatch: Stopwatch, report: Report) -> None:
        async def embed(part: Sequence[FetchedImage]) -> Embeddings | BackendUnavailable:
            stopwatch.span("embedding")
            try:
                async with self._slots:
                    return await self._embed.embed(model, [f.image.embed_bytes for f in part],
                                                   timeout=deadline.timeout(0.01))
            except BackendUnavailable as exc:
                return exc  # reported below, and not retried one by one

        async def embedded(part: Sequence[FetchedImage], reply: Embeddings | BackendUnavailable) -> None:
            if isinstance(reply, BackendUnavailable):
                log.warning("embed batch failed: %s", reply.log_detail or reply.message)
                self._metrics.backend_errors.labels("embed").inc()
                await report(NotEmbedded(tuple(part), "embed_unavailable", reply.message))
                return
            stopwatch.span("embedding")
            images = []
            for fetched, vector in zip(part, reply.vectors, strict=True):
                vector = unit(vector)
                self._cache.put(model, fetched.sha256, vector, fetched.candidate.url, reply.provenance,
                                fetched.image.colour)
                images.append(EmbeddedImage(fetched.candidate, fetched.sha256, vector, fetched.image.embed_bytes,
                                            size=(fetched.image.width, fetched.image.height),
                                            colour=fetched.image.colour))
            await report(Embedded(tuple(images), reply.provenance))

        async def refused(fetched: FetchedImage, _: BackendRejected) -> None:
            await report(NotEmbedded((fetched,), "rejected_by_embed_server"))

        # One bad image fails the whole request; the others go again one by one.
        await embed_or_each_alone(batch, embed, embedded, BackendRejected, refused)

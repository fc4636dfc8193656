"""The query's own vectors: one per model, computed once per search (or read from the
cache) and shared by the captioner and the ranking, each with its provenance."""

from __future__ import annotations

import asyncio

import numpy as np

from search_gateway.clients.backends import EmbedClient
from search_gateway.clients.replies import Provenance
from search_gateway.fetch.images import PreparedImage
from search_gateway.search.budget import Deadline
from search_gateway.search.cache import EmbeddingCache
from search_gateway.search.embedding import unit


class QueryVectors:
    def __init__(self, embed: EmbedClient, cache: EmbeddingCache, deadline: Deadline) -> None:
        self._embed = embed
        self._cache = cache
        self._deadline = deadline
        self._tasks: dict[str, asyncio.Task[np.ndarray]] = {}
        self._patches: dict[str, asyncio.Task[np.ndarray]] = {}
        self._provenance: dict[str, Provenance | None] = {}

    def of_image(self, model: str, image: PreparedImage) -> asyncio.Task[np.ndarray]:
        task = self._tasks.get(model)
        if task is None:
            task = self._tasks[model] = asyncio.ensure_future(self._image(model, image))
        return task

    def patches_of(self, model: str, image: PreparedImage) -> asyncio.Task[np.ndarray]:
        """The query image's patch tokens (one ``EmbedPatches`` call), for re-ranking: started
        with ``of_image`` so that both calls run at once."""
        task = self._patches.get(model)
        if task is None:
            task = self._patches[model] = asyncio.ensure_future(self._embed_patches(model, image))
        return task

    def of_text(self, model: str, text: str) -> asyncio.Task[np.ndarray]:
        task = self._tasks.get(model)
        if task is None:
            task = self._tasks[model] = asyncio.ensure_future(self._text(model, text))
        return task

    def provenance(self, model: str) -> Provenance | None:
        """Who computed the vector for ``model`` (None until it is known)."""
        return self._provenance.get(model)

    def cancel(self, model: str | None = None) -> None:
        """Stop computing the vector for ``model``, or every one still running."""
        for name, task in self._tasks.items():
            if model is None or name == model:
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # looked at: asyncio would log a failure nobody waited for

    def cancel_patches(self) -> None:
        """Stop computing the query's patch tokens (the search ends; the vectors' ``cancel``
        leaves them: the re-ranking at the end still needs them)."""
        for task in self._patches.values():
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()

    async def _image(self, model: str, image: PreparedImage) -> np.ndarray:
        cached = self._cache.by_hash(model, image.sha256)
        if cached is not None:
            self._provenance[model] = cached.provenance
            return cached.vector
        reply = await self._embed.embed(model, [image.embed_bytes], timeout=self._deadline.remaining())
        vector = unit(reply.vectors[0])
        self._cache.put(model, image.sha256, vector, provenance=reply.provenance)
        self._provenance[model] = reply.provenance
        return vector

    async def _embed_patches(self, model: str, image: PreparedImage) -> np.ndarray:
        return (await self._embed.embed_patches(model, image.embed_bytes, timeout=self._deadline.remaining())).tokens

    async def _text(self, model: str, text: str) -> np.ndarray:
        reply = await self._embed.embed_text(model, [text], timeout=self._deadline.remaining())
        self._provenance[model] = reply.provenance
        return unit(reply.vectors[0])

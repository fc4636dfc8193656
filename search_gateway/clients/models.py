"""What the embed server serves, asked through ListModels and remembered briefly.

Requests are validated against it, so an unknown model or text for a model without a
text tower is a 400 naming the valid choices, before any backend work starts.
"""

from __future__ import annotations

import asyncio
import time

from search_gateway.clients.backends import EmbedClient
from search_gateway.clients.replies import ModelDescription
from search_gateway.errors import BackendUnavailable, NoTextTower, UnknownModel
from service_common.model_registry import list_models, text_models


class ModelCatalog:
    # One value, refreshed under an asyncio lock so that concurrent requests share one
    # ListModels call: not a cachetools cache, which is per key and cannot await.
    def __init__(self, embed: EmbedClient, ttl_s: float = 5.0) -> None:
        self._embed = embed
        self._ttl = ttl_s
        self._models: list[ModelDescription] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def models(self, *, refresh: bool = False) -> list[ModelDescription]:
        """The served models; raises BackendUnavailable when the embed server cannot be asked."""
        async with self._lock:
            if refresh or self._models is None or time.monotonic() - self._fetched_at > self._ttl:
                self._models = await self._embed.list_models()
                self._fetched_at = time.monotonic()
            return self._models

    async def _served_or_none(self) -> list[ModelDescription] | None:
        try:
            return await self.models()
        except BackendUnavailable:
            return self._models  # the last answer, however old, or None

    async def names(self) -> list[str]:
        """The model names requests may name: what the embed server serves (every public
        model while it cannot be asked: the call that follows then answers 503 anyway)."""
        served = await self._served_or_none()
        return [m.name for m in served] if served else list(list_models())

    async def require(self, name: str, *, text: bool = False) -> None:
        """Raise a 400-class error unless ``name`` can serve this request."""
        served = await self._served_or_none()
        names = [m.name for m in served] if served else list(list_models())
        if name not in names:
            raise UnknownModel(f"Unknown embedding_model {name!r}; valid models: {', '.join(names)}.")
        if text:
            with_text = [m.name for m in served if m.supports_text] if served else list(text_models())
            if name not in with_text:
                raise NoTextTower(
                    f"Model {name!r} has no text tower, so it cannot search by text; "
                    f"use one of: {', '.join(with_text) or 'none served'}."
                )

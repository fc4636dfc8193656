"""The interface every engine implements, and the errors it may raise."""

from __future__ import annotations

from typing import Protocol

from scraper_service.models import ImageHit, Platform


class EngineError(Exception):
    """The engine could not answer; the platform's other sources carry on."""


class TransientEngineError(EngineError):
    """A failure worth retrying after a pause: rate limits, timeouts."""


class SearchEngine(Protocol):
    """Finds images for one query on one platform.

    ``search`` must not block the event loop (run blocking clients in a thread) and
    must raise only ``EngineError`` subclasses for failures it can name.
    """

    name: str
    platforms: frozenset[Platform]  # the platforms this engine can search

    async def search(self, query: str, platform: Platform, limit: int) -> list[ImageHit]: ...

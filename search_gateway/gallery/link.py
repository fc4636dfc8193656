"""The gateway's one handle on the gallery store: opened at start, reopened later when
it could not be reached, and asked by ``/ready`` how it is doing.

Start-up rule: a store that cannot be READ (``GalleryCorrupt``) stops the gateway
with the store's own message, so nothing runs on (or over) damaged data; a store that
cannot be REACHED (``GalleryUnavailable``: a Qdrant server down, the folder held by
another process) does not: searches answer from the web, marked partial, and the
store is tried again at most every ``retry_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from search_gateway.gallery.base import GalleryCorrupt, GalleryError, GalleryStore, GalleryUnavailable
from search_gateway.gallery.gallery import Gallery

log = logging.getLogger(__name__)


class GalleryLink:
    def __init__(self, opener: Callable[[], Awaitable[GalleryStore]], where: str, *, retry_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._opener = opener
        self.where = where  # the folder or URL, for messages
        self._retry_s = retry_s
        self._clock = clock
        self._gallery: Gallery | None = None
        self._tried_at = float("-inf")
        self._opening = asyncio.Lock()
        # The last failure's sentence while the store is failing; None when it answers.
        self.error: str | None = None
        # Set by close: never opened again. A background task still running at shutdown (a
        # reindex heartbeat, the collector) would otherwise reopen the store after it was
        # closed and keep its lock, and the next process (or a restart in the same one)
        # could not open it.
        self._closed = False

    async def start(self) -> None:
        """Open the store; raises GalleryCorrupt (stop the gateway), never GalleryUnavailable."""
        try:
            await self._open()
        except GalleryCorrupt:
            raise
        except GalleryError as exc:
            log.warning("gallery store at %s unavailable at start; searches run on the web alone: %s", self.where, exc)

    async def _open(self) -> Gallery:
        async with self._opening:
            if self._closed:
                raise GalleryUnavailable(f"The gallery store at {self.where} is closed: the gateway is stopping.")
            if self._gallery is None:
                self._tried_at = self._clock()
                try:
                    self._gallery = Gallery(await self._opener())
                except GalleryError as exc:
                    self.error = str(exc)
                    raise
                self.error = None
                log.info("gallery store open at %s", self.where)
            return self._gallery

    async def gallery(self) -> Gallery:
        """The open gallery; GalleryUnavailable when it is not open and not due for another try."""
        if self._gallery is not None:
            return self._gallery
        if self._clock() - self._tried_at < self._retry_s:
            raise GalleryUnavailable(self.error or f"The gallery store at {self.where} is not open.")
        try:
            return await self._open()
        except GalleryCorrupt as exc:
            # Found damaged after start: never written to; searches go on without it.
            raise GalleryUnavailable(str(exc)) from exc

    def failed(self, exc: BaseException) -> None:
        self.error = str(exc) or type(exc).__name__

    def answered(self) -> None:
        self.error = None

    @property
    def ok(self) -> bool:
        return self._gallery is not None and self.error is None

    async def close(self) -> None:
        async with self._opening:  # after an open under way, and before any later one
            self._closed = True
            gallery, self._gallery = self._gallery, None
        if gallery is not None:
            await gallery.store.close()

"""Stage 2: download a candidate and check it is an image, or say why not.

URLs whose download failed recently are skipped (``failed_downloads.py``), and each
new failure is remembered for them, except a timeout caused by the search's own
budget running out, which says nothing about the URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_gateway.clients.replies import Candidate
from search_gateway.errors import DownloadFailed, GatewayError
from search_gateway.fetch.downloader import Downloader
from search_gateway.fetch.failed_downloads import FailedDownloads
from search_gateway.fetch.images import ImageLimits, prepare_in_thread
from search_gateway.search.budget import Deadline
from search_gateway.search.types import FetchedImage


@dataclass(frozen=True)
class DownloadFailure:
    reason: str  # the metrics label: the downloader's reason, or the image check's error code


class CandidateDownloads:
    def __init__(self, downloader: Downloader, limits: ImageLimits, failures: FailedDownloads | None) -> None:
        self._downloader = downloader
        self._limits = limits
        self._failures = failures

    def known_failure(self, url: str) -> str | None:
        """Why ``url`` failed recently, if it did: then it is not fetched again."""
        return self._failures.reason(url) if self._failures is not None else None

    async def fetch(self, candidate: Candidate, deadline: Deadline) -> FetchedImage | DownloadFailure:
        try:
            data = await self._downloader.fetch(candidate.url, candidate.headers, timeout=deadline.timeout(0.01))
            # Candidates are not fully decoded here: the embed server decodes them anyway.
            image = await prepare_in_thread(data, self._limits, "candidate image", full_check=False)
        except DownloadFailed as exc:
            return self._failed(candidate.url, exc.reason, deadline)
        except GatewayError as exc:  # not an image, truncated, pixel bomb, empty
            return self._failed(candidate.url, exc.code, deadline)
        return FetchedImage(candidate, image)

    async def refetch(self, candidate: Candidate, deadline: Deadline) -> bytes:
        """Embed-ready bytes of a candidate ranked from the cache; raises on failure."""
        raw = await self._downloader.fetch(candidate.url, candidate.headers, timeout=deadline.timeout(0.01))
        return (await prepare_in_thread(raw, self._limits, "candidate image", full_check=False)).embed_bytes

    def _failed(self, url: str, reason: str, deadline: Deadline) -> DownloadFailure:
        if self._failures is not None and deadline.remaining() > 0:
            self._failures.remember(url, reason)
        return DownloadFailure(reason)

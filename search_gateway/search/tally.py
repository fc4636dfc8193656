"""What one search has counted and timed so far; frozen into ``SearchStats`` at the end."""

from __future__ import annotations

import time
from collections import Counter
from types import MappingProxyType

from search_gateway.metrics import Metrics
from search_gateway.search.types import SearchStats


class Tally:
    """Counters of one search; failures also go to the gateway's metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.candidates_found = 0
        self.from_cache = 0
        self.downloaded = 0
        self.embedded = 0
        self.failed_by_reason: Counter[str] = Counter()
        self.scraper_error: str | None = None
        self.embed_error: str | None = None
        self.attention_error: str | None = None
        self.from_gallery = 0
        self.gallery_known = 0
        self.gallery_error: str | None = None
        self.rerank_error: str | None = None

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())

    def fail(self, reason: str) -> None:
        self.failed_by_reason[reason] += 1
        self._metrics.download_failed(reason)

    def skip(self, reason: str) -> None:
        """A URL that failed recently, not tried again: counted as failed, not as a new failure."""
        self.failed_by_reason[reason] += 1

    def stats(self, *, ranked: int, duplicates: int) -> SearchStats:
        return SearchStats(
            candidates_found=self.candidates_found, from_cache=self.from_cache, downloaded=self.downloaded,
            embedded=self.embedded, ranked=ranked, duplicates=duplicates,
            failed_by_reason=MappingProxyType(dict(self.failed_by_reason)),
            scraper_error=self.scraper_error, embed_error=self.embed_error, attention_error=self.attention_error,
            from_gallery=self.from_gallery, gallery_known=self.gallery_known, gallery_error=self.gallery_error,
            rerank_error=self.rerank_error,
        )


class Stopwatch:
    """Stage timings in milliseconds, as the reply's ``timings`` shows them."""

    # Stages that many tasks share, timed from the first start to the last end.
    SPANS = ("download", "embedding")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._span_starts: dict[str, float] = {}
        self.timings_ms: dict[str, float] = {}

    def mark(self, stage: str, start: float) -> None:
        """A stage that ran once, from ``start`` until now."""
        seconds = time.monotonic() - start
        self.timings_ms[f"{stage}_ms"] = round(seconds * 1000, 1)
        self._metrics.stage(stage, seconds)

    def span(self, stage: str) -> None:
        """Extend a shared stage to now (its first call starts it)."""
        now = time.monotonic()
        start = self._span_starts.setdefault(stage, now)
        self.timings_ms[f"{stage}_ms"] = round((now - start) * 1000, 1)

    def finish(self, total_s: float) -> dict[str, float]:
        for stage in self.SPANS:  # observed once per search, at the end
            if f"{stage}_ms" in self.timings_ms:
                self._metrics.stage(stage, self.timings_ms[f"{stage}_ms"] / 1000)
        self.timings_ms["total_ms"] = round(total_s * 1000, 1)
        self._metrics.stage("total", total_s)
        return dict(self.timings_ms)

"""A local catalog: a JSON Lines manifest of images, matched against the query's words.

One JSON object a line with ``url`` (required), ``source_url``, ``platform``, ``title``
and ``tags`` (a list of strings). It lets the service work offline, on a private
collection, and in tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scraper_service.config import ScraperSettings
from scraper_service.models import ImageHit, Platform
from scraper_service.platforms import ALL_PLATFORMS
from scraper_service.query import STOP_WORDS, words

logger = logging.getLogger(__name__)

MAX_MANIFEST_LINES = 1_000_000


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    url: str
    source_url: str
    platform: Platform
    title: str
    terms: frozenset[str]


def load_manifest(path: Path) -> list[CatalogEntry]:
    """Parse a manifest; raise ``ValueError`` naming the file and line of a bad entry."""
    entries: list[CatalogEntry] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if number > MAX_MANIFEST_LINES:
                raise ValueError(f"{path}: more than {MAX_MANIFEST_LINES} lines")
            if not line.strip():
                continue
            try:
                entries.append(_entry(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} line {number}: {exc}") from None
    return entries


def _entry(obj: object) -> CatalogEntry:
    if not isinstance(obj, dict):
        raise TypeError("each line must be a JSON object")
    url = obj.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError('"url" is required and must be a non-empty string')
    tags = obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TypeError('"tags" must be a list of strings')
    title = str(obj.get("title") or "")
    terms = {_fold(w) for w in words(" ".join([title, *tags]))}
    return CatalogEntry(
        url=url.strip(),
        source_url=str(obj.get("source_url") or ""),
        platform=Platform.parse(obj.get("platform")),
        title=title,
        terms=frozenset(terms),
    )


def term_weights(entries: list[CatalogEntry]) -> dict[str, float]:
    """Smoothed inverse document frequency: a word on every entry ("tattoo") counts
    little, a rare one ("mandala") a lot, so the best matches rise to the top."""
    counts = Counter(term for e in entries for term in e.terms)
    return {term: math.log(1 + len(entries) / n) for term, n in counts.items()}


def _fold(word: str) -> str:
    """A crude singular, so "roses" finds "rose"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


class CatalogEngine:
    name = "catalog"
    platforms = frozenset(ALL_PLATFORMS)

    def __init__(self, settings: ScraperSettings) -> None:
        if settings.catalog is None:
            raise ValueError("SCRAPER_CATALOG must be set for the catalog engine")
        self._path = settings.catalog
        if not self._path.is_file():
            raise FileNotFoundError(f"SCRAPER_CATALOG: no manifest at {self._path}")
        self._mtime_ns = self._path.stat().st_mtime_ns
        self._entries = load_manifest(self._path)
        self._weights = term_weights(self._entries)
        self._lock = asyncio.Lock()
        logger.info("catalog: %d images from %s", len(self._entries), self._path)

    async def search(self, query: str, platform: Platform, limit: int) -> list[ImageHit]:
        entries, weights = await self._current_index()
        pool = [e for e in entries if e.platform is platform]
        wanted = {_fold(w) for w in words(query) if w not in STOP_WORDS}
        scored = [(sum(weights[t] for t in wanted & e.terms), i, e) for i, e in enumerate(pool)]
        matched = [s for s in scored if s[0] > 0]
        # Best matches first, manifest order among equals; with no match at all the whole
        # catalog is offered, because the visual ranking downstream does the real choosing.
        ranked = sorted(matched, key=lambda s: (-s[0], s[1])) if matched else scored
        return [
            ImageHit(
                image_url=e.url,
                source_url=e.source_url,
                platform=e.platform,
                title=e.title,
                engine=self.name,
                query=query,
            )
            for _, _, e in ranked[:limit]
        ]

    async def _current_index(self) -> tuple[list[CatalogEntry], dict[str, float]]:
        # The manifest may be rewritten while the service runs (the demo does so);
        # reload on change, off the loop. A broken rewrite keeps the last good copy.
        async with self._lock:
            try:
                mtime_ns = self._path.stat().st_mtime_ns
                if mtime_ns != self._mtime_ns:
                    entries = await asyncio.to_thread(load_manifest, self._path)
                    self._entries, self._weights = entries, term_weights(entries)
                    self._mtime_ns = mtime_ns
                    logger.info("catalog: reloaded %d images from %s", len(self._entries), self._path)
            except (OSError, ValueError) as exc:
                logger.warning("catalog: keeping the previous manifest: %s", exc)
            return self._entries, self._weights

"""Engines by public name. ``SCRAPER_ENGINES`` picks from these."""

from __future__ import annotations

from collections.abc import Callable

from scraper_service.config import KNOWN_ENGINES, ScraperSettings
from scraper_service.engines.base import EngineError, SearchEngine, TransientEngineError
from scraper_service.engines.catalog import CatalogEngine
from scraper_service.engines.duckduckgo import DuckDuckGoEngine

ENGINES: dict[str, Callable[[ScraperSettings], SearchEngine]] = {
    "duckduckgo": DuckDuckGoEngine,
    "catalog": CatalogEngine,
}
assert set(ENGINES) == set(KNOWN_ENGINES), "config.KNOWN_ENGINES must list every engine"


def build_engines(settings: ScraperSettings) -> list[SearchEngine]:
    """The configured engines, in the order SCRAPER_ENGINES names them."""
    unknown = [n for n in settings.engines if n not in ENGINES]
    if unknown:
        raise ValueError(f"SCRAPER_ENGINES: unknown engine(s) {unknown}; available: {', '.join(ENGINES)}")
    return [ENGINES[name](settings) for name in settings.engines]


__all__ = ["ENGINES", "EngineError", "SearchEngine", "TransientEngineError", "build_engines"]

"""Plain data the core passes around; the gRPC messages are built from these at the edge."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Platform(enum.Enum):
    PINTEREST = "pinterest"
    REDDIT = "reddit"
    INSTAGRAM = "instagram"
    OTHER = "other"  # catalog entries whose platform is unknown

    @classmethod
    def parse(cls, raw: str | None) -> Platform:
        """Map a free-form platform name (from a manifest) to a Platform; unknown -> OTHER."""
        try:
            return cls((raw or "").strip().lower())
        except ValueError:
            return cls.OTHER


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ImageHit:
    """One image an engine found."""

    image_url: str
    source_url: str
    platform: Platform
    title: str
    engine: str
    query: str  # the query the engine actually ran
    width: int = 0
    height: int = 0
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Found:
    """An ImageHit that survived deduplication, tagged with the tier that found it."""

    hit: ImageHit
    tier: int


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """A validated search request."""

    query: str
    max_results: int
    min_results: int
    platforms: frozenset[Platform]  # empty: the default tiers over every platform

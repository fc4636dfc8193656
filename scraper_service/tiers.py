"""Which platforms each fallback tier queries, and with which query."""

from __future__ import annotations

from dataclasses import dataclass

from scraper_service.models import Platform, SearchSpec
from scraper_service.platforms import ALL_PLATFORMS, TIER_PLATFORMS
from scraper_service.query import normalise_query, simplify_query


@dataclass(frozen=True, slots=True)
class Tier:
    number: int
    query: str
    platforms: tuple[Platform, ...]


def plan_tiers(spec: SearchSpec) -> list[Tier]:
    """Tier 1 and 2 run the query on their platforms; tier 3 runs a simplified query on
    every platform. Requested platforms restrict every tier; tiers left empty are dropped.

    Tier 3 is dropped too when simplifying changes nothing: it would repeat the very
    queries that already came up short.
    """
    allowed = spec.platforms or frozenset(ALL_PLATFORMS)
    tiers = [
        Tier(number, spec.query, platforms)
        for number, group in enumerate(TIER_PLATFORMS, start=1)
        if (platforms := tuple(p for p in group if p in allowed))
    ]
    simplified = simplify_query(spec.query)
    if simplified != normalise_query(spec.query):
        tiers.append(Tier(len(TIER_PLATFORMS) + 1, simplified, tuple(p for p in ALL_PLATFORMS if p in allowed)))
    return tiers

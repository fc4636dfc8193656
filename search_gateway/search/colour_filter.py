"""The colour filter and the palette order of a search's results.

``color=`` keeps the results whose colour scheme is the one asked: gallery results are
filtered in the store query (GalleryFilter.color_scheme); web results of this search by
the colour facts read from their pixels when they were downloaded (fetch/colour.py). A
web result whose pixels were not read here (its vector came from the embedding cache by
URL, or the file would not decode) has no known scheme and is left out: a filter shows
only what it knows to match.

``palette=#rrggbb`` reorders the results that passed every filter by

    score + PALETTE_WEIGHT * nearness,   nearness in [0, 1] (fetch/colour.palette_nearness)

so a result's place moves by at most PALETTE_WEIGHT of cosine: the palette breaks near-ties
among similar results and never lifts an unrelated image over a close one. The reply's
``score`` stays the cosine; each result carries its ``palette_match`` (the nearness). A
result with no palette known has nearness 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from search_gateway.fetch.colour import ColourFacts, palette_nearness
from search_gateway.search.types import RankedResult

# Cosine points a perfect palette match is worth (a result moves past others at most this much closer).
PALETTE_WEIGHT = 0.15


def colour_fields(facts: ColourFacts | None) -> dict[str, Any]:
    """A RankedResult's colour fields from the facts read from its pixels."""
    if facts is None:
        return {}
    return {"color_scheme": facts.scheme, "palette": facts.palette, "palette_shares": facts.shares}


def passes(result: RankedResult, color: str | None) -> bool:
    return color is None or result.color_scheme == color


def by_palette(results: Iterable[RankedResult], colour: str) -> list[RankedResult]:
    """The results with their palette_match, ordered by score + PALETTE_WEIGHT * palette_match."""
    matched = [replace(r, palette_match=round(palette_nearness(colour, r.palette, r.palette_shares), 6))
               for r in results]
    return sorted(matched, key=lambda r: -(r.score + PALETTE_WEIGHT * (r.palette_match or 0.0)))

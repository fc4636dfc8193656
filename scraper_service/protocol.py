"""Conversions between the gRPC messages and the core's plain data, with request validation."""

from __future__ import annotations

from scraper_service.config import ScraperSettings
from scraper_service.models import Found, Platform, SearchSpec
from scraper_service.query import normalise_query
from tattoo_search.v1 import scraper_pb2

MAX_QUERY_CHARS = 256

_FROM_PROTO: dict[int, Platform] = {
    scraper_pb2.PLATFORM_PINTEREST: Platform.PINTEREST,
    scraper_pb2.PLATFORM_REDDIT: Platform.REDDIT,
    scraper_pb2.PLATFORM_INSTAGRAM: Platform.INSTAGRAM,
    scraper_pb2.PLATFORM_OTHER: Platform.OTHER,
}
_TO_PROTO: dict[Platform, int] = {v: k for k, v in _FROM_PROTO.items()}

CacheKey = tuple[str, tuple[str, ...], int, int]


def spec_from_request(request: scraper_pb2.SearchRequest, settings: ScraperSettings) -> SearchSpec:
    """Validate a request and fill in defaults; raise ``ValueError`` saying what is wrong."""
    query = " ".join(request.query.split())
    if not query:
        raise ValueError("query is empty: send the words to search for, e.g. 'rose tattoo'")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    limit = settings.max_results_limit
    if request.max_results > limit:
        raise ValueError(f"max_results {request.max_results} is above this server's limit of {limit}")
    if request.min_results > limit:
        raise ValueError(f"min_results {request.min_results} is above this server's limit of {limit}")
    platforms = set()
    for index, value in enumerate(request.platforms):
        if value not in _FROM_PROTO:
            name = scraper_pb2.Platform.Name(value) if value in scraper_pb2.Platform.values() else str(value)
            raise ValueError(f"platforms[{index}] is {name}, which is not a platform this server searches")
        platforms.add(_FROM_PROTO[value])
    max_results = request.max_results or settings.max_results
    # Asking for more than max_results before falling back can never be satisfied,
    # so the threshold is capped (which also keeps cache keys canonical).
    min_results = min(request.min_results or settings.min_results, max_results)
    return SearchSpec(query, max_results, min_results, frozenset(platforms))


def cache_key(spec: SearchSpec) -> CacheKey:
    # min_results is part of the key: it decides how many tiers run, so a search that
    # stopped after tier 1 must not answer one that asked for more.
    return (
        normalise_query(spec.query),
        tuple(sorted(p.value for p in spec.platforms)),
        spec.max_results,
        spec.min_results,
    )


def candidate_message(found: Found, *, from_cache: bool = False) -> scraper_pb2.Candidate:
    hit = found.hit
    return scraper_pb2.Candidate(
        image_url=hit.image_url,
        source_url=hit.source_url,
        platform=_TO_PROTO[hit.platform],  # type: ignore[arg-type]
        title=hit.title,
        width=hit.width,
        height=hit.height,
        engine=hit.engine,
        request_headers=[scraper_pb2.Header(name=n, value=v) for n, v in hit.headers],
        tier=found.tier,
        from_cache=from_cache,
        query=hit.query,
    )

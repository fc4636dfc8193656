"""Stage 1: candidates from the scraper's stream, each URL once, at most ``limit``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from search_gateway.clients.backends import ScraperClient
from search_gateway.clients.replies import Candidate


async def unique_candidates(scraper: ScraperClient, caption: str, limit: int, *,
                            timeout: float) -> AsyncGenerator[Candidate, None]:
    """Candidates as the scraper streams them, without empty or repeated URLs.

    Raises ``BackendUnavailable`` when the stream fails; the caller decides whether
    the candidates already yielded are enough to go on with.
    """
    seen: set[str] = set()
    # aclosing: stopping at the limit ends the gRPC stream now, not when collected.
    async with aclosing(scraper.search(caption, limit, timeout=timeout)) as stream:
        async for candidate in stream:
            if not candidate.url or candidate.url in seen:
                continue
            seen.add(candidate.url)
            yield candidate
            if len(seen) >= limit:
                return

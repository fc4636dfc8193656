"""DuckDuckGo image search through ``ddgs``, one ``site:``-filtered query per platform."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ddgs import DDGS
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from scraper_service.config import ScraperSettings
from scraper_service.engines.base import EngineError, TransientEngineError
from scraper_service.models import ImageHit, Platform
from scraper_service.platforms import SITE_DOMAINS, download_headers

logger = logging.getLogger(__name__)

# ddgs reports "nothing found" as a plain DDGSException with this text; that is an
# empty answer, not a failure.
_NO_RESULTS = "No results found."


class DuckDuckGoEngine:
    name = "duckduckgo"
    platforms = frozenset(SITE_DOMAINS)

    def __init__(self, settings: ScraperSettings) -> None:
        # ddgs's own timeout is an int of seconds; it bounds each HTTP call inside the
        # worker thread, which asyncio cannot interrupt once started.
        self._timeout = max(1, round(settings.platform_timeout_s))
        self._backend = settings.ddgs_backend
        self._region = settings.ddgs_region
        self._safesearch = settings.ddgs_safesearch
        # ddgs is synchronous: its calls run here, never on the event loop. A dedicated
        # pool bounds how many run at once however many requests come in.
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="ddgs")

    async def search(self, query: str, platform: Platform, limit: int) -> list[ImageHit]:
        domain = SITE_DOMAINS[platform]
        site_query = f"{query} site:{domain}"
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(self._pool, self._images, site_query, limit)
        headers = download_headers(platform)
        hits = []
        for item in raw:
            image = str(item.get("image") or "")
            if not image:
                continue
            hits.append(
                ImageHit(
                    image_url=image,
                    source_url=str(item.get("url") or ""),
                    platform=platform,
                    title=str(item.get("title") or ""),
                    engine=self.name,
                    query=query,
                    width=_dimension(item.get("width")),
                    height=_dimension(item.get("height")),
                    headers=headers,
                )
            )
        return hits[:limit]

    def _images(self, site_query: str, limit: int) -> list[dict[str, Any]]:
        try:
            with DDGS(timeout=self._timeout) as ddgs:
                return list(
                    ddgs.images(
                        site_query,
                        max_results=limit,
                        backend=self._backend,
                        region=self._region,
                        safesearch=self._safesearch,
                    )
                )
        except (RatelimitException, TimeoutException) as exc:
            raise TransientEngineError(f"DuckDuckGo {type(exc).__name__}: {exc}") from exc
        except DDGSException as exc:
            if str(exc) == _NO_RESULTS:
                return []
            raise EngineError(f"DuckDuckGo failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a scraper library breaks in many ways;
            # whatever it raises must fail this platform only, never the whole stream.
            raise EngineError(f"DuckDuckGo failed unexpectedly: {type(exc).__name__}: {exc}") from exc


def _dimension(value: object) -> int:
    """ddgs gives sizes as ints, digit strings or empty strings."""
    try:
        number = int(str(value))
    except ValueError:
        return 0
    return number if 0 < number < 2**31 else 0

"""The tiered search: runs each tier's sources concurrently and streams what they find."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from scraper_service.engines.base import EngineError, SearchEngine, TransientEngineError
from scraper_service.models import Found, ImageHit, Platform, SearchSpec
from scraper_service.retry import RetryPolicy, retry_async
from scraper_service.tiers import plan_tiers
from scraper_service.urls import dedup_key, normalise_url

logger = logging.getLogger(__name__)


# Why one engine attempt failed: no answer within the platform timeout; a transient
# refusal (rate limit, the engine's own timeout), which is retried; another engine
# error, not retried; an unexpected exception in the engine (a bug).
EngineErrorReason = Literal["timeout", "transient", "error", "internal"]
# Told of each failed attempt, by engine name (the metrics count them).
EngineErrorListener = Callable[[str, EngineErrorReason], None]


class NoSourcesError(ValueError):
    """No configured engine can search any requested platform."""


class AllSourcesFailedError(Exception):
    """Every source that was asked failed; the message lists why."""


class _SourceFailed(Exception):
    """One source gave up; its message is the reason reported to the client."""


@dataclass(slots=True)
class SearchReport:
    """What happened during one search, filled in as it runs."""

    tiers: list[int] = field(default_factory=list)
    sources: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Source:
    engine: SearchEngine
    platform: Platform

    def __str__(self) -> str:
        return f"{self.engine.name}/{self.platform.value}"


class TieredSearch:
    def __init__(
        self,
        engines: Sequence[SearchEngine],
        retry: RetryPolicy,
        timeout_s: float,
        on_engine_error: EngineErrorListener | None = None,
    ) -> None:
        self._engines = tuple(engines)
        self._retry = retry
        self._timeout_s = timeout_s
        self._on_engine_error = on_engine_error

    async def stream(self, spec: SearchSpec, report: SearchReport) -> AsyncGenerator[Found, None]:
        """Yield deduplicated results as each source answers, tier after tier.

        Stops at ``spec.max_results``; moves to the next tier only while fewer than
        ``spec.min_results`` were found. Closing the generator (or cancelling the task
        that drives it) cancels every source still running.
        """
        plan = [(tier, self._sources(tier.platforms)) for tier in plan_tiers(spec)]
        if not any(sources for _, sources in plan):
            wanted = ", ".join(sorted(p.value for p in spec.platforms))
            engines = ", ".join(e.name for e in self._engines)
            raise NoSourcesError(f"no configured engine ({engines}) can search {wanted}")

        seen: set[str] = set()
        delivered = 0
        for tier, sources in plan:
            if delivered >= spec.min_results:
                break
            if not sources:
                continue
            report.tiers.append(tier.number)
            report.sources += len(sources)
            tasks = {
                asyncio.create_task(self._ask(s, tier.query, spec.max_results), name=f"search {s}"): s for s in sources
            }
            try:
                for answer in asyncio.as_completed(tasks):
                    try:
                        source, hits = await answer
                    except _SourceFailed as failed:
                        report.failures.append(str(failed))
                        continue
                    logger.debug("tier %d %s: %d hits", tier.number, source, len(hits))
                    for hit in hits:
                        clean = _clean(hit)
                        if clean is None:
                            continue
                        key = dedup_key(clean.image_url)
                        if key in seen:
                            continue
                        seen.add(key)
                        yield Found(clean, tier.number)
                        delivered += 1
                        if delivered >= spec.max_results:
                            return
            finally:
                # Runs on normal exit, on max_results, on close and on cancellation:
                # whatever is still in flight for this tier is stopped and awaited.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        if report.failures and len(report.failures) == report.sources:
            raise AllSourcesFailedError("; ".join(report.failures))

    def _sources(self, platforms: Sequence[Platform]) -> list[_Source]:
        return [_Source(e, p) for p in platforms for e in self._engines if p in e.platforms]

    async def _ask(self, source: _Source, query: str, limit: int) -> tuple[_Source, list[ImageHit]]:
        async def attempt() -> list[ImageHit]:
            try:
                return await asyncio.wait_for(source.engine.search(query, source.platform, limit), self._timeout_s)
            except TimeoutError:
                self._engine_failed(source, "timeout")
                raise TransientEngineError(f"no answer within {self._timeout_s:g}s") from None
            except TransientEngineError:
                self._engine_failed(source, "transient")
                raise
            except EngineError:
                self._engine_failed(source, "error")
                raise
            except Exception:
                self._engine_failed(source, "internal")
                raise

        try:
            hits = await retry_async(attempt, self._retry, (TransientEngineError,), str(source))
        except EngineError as exc:
            logger.warning("%s failed: %s", source, exc)
            raise _SourceFailed(f"{source}: {_shorten(str(exc))}") from exc
        except Exception as exc:
            # A bug in one engine must cost one source, not the whole stream.
            logger.exception("%s failed unexpectedly", source)
            raise _SourceFailed(f"{source}: internal error ({type(exc).__name__})") from exc
        return source, hits

    def _engine_failed(self, source: _Source, reason: EngineErrorReason) -> None:
        if self._on_engine_error is not None:
            self._on_engine_error(source.engine.name, reason)


# Library errors can quote whole URLs and resolver dumps; the status message lists one
# reason per source, so each is kept to a readable length (the log has the full text).
MAX_REASON_CHARS = 160


def _shorten(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _clean(hit: ImageHit) -> ImageHit | None:
    image_url = normalise_url(hit.image_url)
    if image_url is None:
        return None
    return replace(hit, image_url=image_url, source_url=normalise_url(hit.source_url) or "")

"""Bounded retries with exponential backoff and jitter.

For the web search engines (ddgs over HTTP), not gRPC: gRPC calls retry by their channel's
service-config retryPolicy instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # total tries, the first included
    base_s: float
    max_s: float

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry).

        The exponential part is capped at ``max_s``; up to half of it again is added
        at random so that clients rate-limited together do not come back together.
        """
        step = min(self.max_s, self.base_s * 2.0**retry)
        uniform = rng.uniform if rng is not None else random.uniform
        return step + uniform(0, step / 2)


async def retry_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    what: str,
) -> T:
    """Run ``attempt`` until it succeeds, raises something not in ``retry_on``, or the
    attempts run out (then the last error propagates)."""
    for retry in range(policy.attempts):
        try:
            return await attempt()
        except retry_on as exc:
            if retry + 1 >= policy.attempts:
                raise
            wait = policy.delay(retry)
            logger.info("%s: %s; retry %d/%d in %.2fs", what, exc, retry + 1, policy.attempts - 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: attempts >= 1 is checked in the settings")

"""Waiting for a background effect in a test: polled, with a bound that only keeps a
broken build from hanging the suite (never a timing assertion)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], what: str, *, polls: int = 1200, every_s: float = 0.05) -> None:
    """Return once ``check()`` is true; AssertionError naming ``what`` if it never is."""
    for _ in range(polls):
        if await check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"never happened: {what}")

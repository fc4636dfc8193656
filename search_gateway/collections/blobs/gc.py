"""Garbage collection of blobs that no gallery point refers to (see base.py's docstring)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from search_gateway.collections.blobs.base import BlobStore

IsReferenced = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class Collected:
    """What one collection did: blobs looked at, deleted, and leftovers of writes swept."""

    examined: int
    deleted: tuple[str, ...]
    partial_removed: int


async def collect_garbage(
    blobs: BlobStore,
    is_referenced: IsReferenced,
    older_than_s: float,
    *,
    now: datetime | None = None,
) -> Collected:
    """Delete every blob older than ``older_than_s`` that ``is_referenced`` says no point uses.

    The grace period protects uploads in progress (bytes written, point not yet). The age
    is checked again right before each delete, because ``put`` of the same bytes may have
    renewed it while the reference was being looked up. ``now`` is for tests.
    """
    if older_than_s < 0:
        raise ValueError("the grace period must not be negative")
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=older_than_s)
    examined = 0
    deleted: list[str] = []
    # Candidates first, deletes after: deleting while a listing pages on is undefined
    # on some S3-compatible servers.
    candidates = [entry.sha256 async for entry in blobs.list_older_than(cutoff)]
    for sha256 in candidates:
        examined += 1
        if await release(blobs, sha256, is_referenced, cutoff=cutoff):
            deleted.append(sha256)
    partial = await blobs.sweep_partial(cutoff)
    return Collected(examined=examined, deleted=tuple(deleted), partial_removed=partial)


async def release(
    blobs: BlobStore,
    sha256: str,
    is_referenced: IsReferenced,
    *,
    older_than_s: float = 0.0,
    cutoff: datetime | None = None,
) -> bool:
    """Delete one blob unless a point references it or it was (re)written after the cutoff
    (``now - older_than_s`` when no cutoff is given); whether it was deleted.

    Called right after the last point holding a picture is deleted, so the bytes go at
    once. An upload of the same picture in progress keeps them only when ``older_than_s``
    is longer than its write (its put renewed their age, and its record may land just
    after ``is_referenced`` answered): the gateway passes GATEWAY_BLOBS_RELEASE_GRACE_S.
    """
    if cutoff is None:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    if await is_referenced(sha256):
        return False
    current = await blobs.stat(sha256)
    if current is None or current.modified >= cutoff:
        return False
    await blobs.delete(sha256)
    return True

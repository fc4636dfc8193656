"""The write order that keeps points and bytes consistent: bytes first, then the point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from search_gateway.collections.blobs.base import BlobRef, BlobStore


async def put_then_index(
    blobs: BlobStore,
    sha256: str,
    data: bytes,
    content_type: str,
    write_point: Callable[[], Awaitable[None]],
) -> BlobRef:
    """Store the original, then write its point, then make sure the bytes are still there.

    A failure (or crash) before the point is written leaves only bytes, which the
    collector takes after its grace period; never a point without bytes. The check
    after the point covers a collector that deleted the same bytes (unreferenced until
    our point landed) in between: they are stored again from the upload in hand.
    """
    ref = await blobs.put(sha256, data, content_type)
    await write_point()
    if not await blobs.exists(sha256):
        ref = await blobs.put(sha256, data, content_type)
    return ref

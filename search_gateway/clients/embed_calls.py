"""Packing images into Embed calls, for the uploads, the reindex jobs and the search alike.

An Embed call carries a few images (GATEWAY_EMBED_BATCH) and a bounded number of bytes
(GATEWAY_EMBED_BATCH_BYTES): one call per image leaves the embed server's batcher with
batches of one, and one huge call holds its queue (and a gRPC message) too long.
``pack`` is the one rule that splits a known list into calls; ``embed_or_each_alone``
is the one way to keep one image the embed server refuses from taking the others of its
call with it. (The search's batches form from a queue as images arrive, a rule of their
own in search/embedding.py; their refusals go through ``embed_or_each_alone`` too.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=Exception)


def pack(items: Sequence[T], size: Callable[[T], int] | None = None, *, max_items: int | None = None,
         max_bytes: int | None = None) -> list[list[T]]:
    """``items`` in order, split into calls of at most ``max_items`` items and ``max_bytes``
    bytes (``size`` of each item; a limit left None is no limit, and without ``size`` items
    weigh nothing). A call takes items until the next one would pass a limit; an item over
    the byte limit alone still gets a call of its own, since it cannot be made smaller here
    (the embed server says whether it takes it)."""
    calls: list[list[T]] = []
    count = total = 0
    for item in items:
        n = size(item) if size is not None else 0
        full = (max_items is not None and count >= max_items) or (max_bytes is not None and total + n > max_bytes)
        if not calls or full:
            calls.append([])
            count = total = 0
        calls[-1].append(item)
        count += 1
        total += n
    return calls


async def embed_or_each_alone(batch: Sequence[T], embed: Callable[[Sequence[T]], Awaitable[R]],
                              embedded: Callable[[Sequence[T], R], Awaitable[None]],
                              refused: type[E], refused_alone: Callable[[T, E], Awaitable[None]]) -> None:
    """``embed(batch)`` and hand its reply to ``embedded``. The embed server refuses a whole
    call for one bad image (``refused`` raised): then each image of the batch goes again in
    a call of its own, so only the bad one fails, and an image refused alone goes to
    ``refused_alone``. Only ``embed`` is watched for the refusal: ``embedded``'s errors are
    its own."""
    try:
        reply = await embed(batch)
    except refused as exc:
        if len(batch) > 1:
            for item in batch:
                await embed_or_each_alone([item], embed, embedded, refused, refused_alone)
        else:
            await refused_alone(batch[0], exc)
        return
    await embedded(batch, reply)

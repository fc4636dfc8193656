"""The caption chain hands captioners the query's vector, shared with the ranking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import numpy as np

from search_gateway.search.caption import FALLBACK_CAPTION, CaptionChain


class _Impatient:
    """Waits a moment for the image vector, then gives up (raises)."""

    vector_model = "clip"

    async def caption(self, image: bytes, image_vector: Awaitable[np.ndarray], *, timeout: float) -> str:
        await asyncio.wait_for(image_vector, 0.05)
        return "never"


class _Reader:
    vector_model = "clip"

    async def caption(self, image: bytes, image_vector: Awaitable[np.ndarray], *, timeout: float) -> str:
        vector = await image_vector
        return f"{len(vector)}-dim tattoo"


async def test_a_captioner_giving_up_on_the_query_vector_leaves_it_to_the_ranking() -> None:
    shared: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    caption = await CaptionChain([("impatient", _Impatient()), ("reader", _Reader())]).caption(
        b"image", shared, timeout=0.5)
    # The first captioner's timeout did not cancel the search's vector; the second
    # captioner waited on it until the time given ran out.
    assert caption == (FALLBACK_CAPTION, "fallback")
    assert not shared.cancelled()
    shared.set_result(np.ones(4, dtype=np.float32))
    assert (await shared).shape == (4,)


async def test_the_next_captioner_reads_the_vector_once_it_is_there() -> None:
    shared: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.1, shared.set_result, np.ones(8, dtype=np.float32))
    caption = await CaptionChain([("impatient", _Impatient()), ("reader", _Reader())]).caption(
        b"image", shared, timeout=5)
    assert caption == ("8-dim tattoo", "reader")

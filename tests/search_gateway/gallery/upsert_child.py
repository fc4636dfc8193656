"""Child process for the kill -9 test: upsert batches forever, print each acknowledged batch.

``python -m tests.search_gateway.gallery.upsert_child STORE_FOLDER`` prints one line per batch,
``ack <first> <last>`` (point numbers, inclusive), only after the upsert returned.
"""

from __future__ import annotations

import asyncio
import sys

from search_gateway.gallery.edge import EdgeGalleryStore
from tests.search_gateway.gallery.contract import SPACE, sample_point

BATCH = 25


async def main(folder: str) -> None:
    store = await EdgeGalleryStore.open(folder)
    n = 0
    while True:
        await store.upsert(SPACE, [sample_point(i) for i in range(n, n + BATCH)])
        print(f"ack {n} {n + BATCH - 1}", flush=True)
        n += BATCH


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""Child process for the kill -9 test: writes big random blobs into a folder forever,
printing a line after each one, until it is killed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

from search_gateway.collections.blobs.local import LocalBlobStore


async def main(folder: str) -> None:
    store = await LocalBlobStore.open(folder)
    n = 0
    while True:
        data = os.urandom(2_000_000 + n % 7 * 100_000)
        await store.put(hashlib.sha256(data).hexdigest(), data, "application/octet-stream")
        n += 1
        print(n, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

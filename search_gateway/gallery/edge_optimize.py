"""Child process of :meth:`EdgeGalleryStore.optimize`: build one shard's indexes.

Run apart from the gateway because the engine holds the GIL for the whole build.
Prints ``true`` when segments were optimized, ``false`` when there was nothing to do.
"""

from __future__ import annotations

import json
import sys

import qdrant_edge as qe


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m search_gateway.gallery.edge_optimize SHARD_FOLDER", file=sys.stderr)
        return 2
    engine = qe.EdgeShard.load(argv[0])
    try:
        changed = engine.optimize()
    finally:
        engine.close()
    print(json.dumps(bool(changed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

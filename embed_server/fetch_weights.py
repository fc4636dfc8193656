"""`python -m embed_server.fetch_weights --dir DIR`: download the pretrained weights.

Run this on a machine with internet access (the server itself never downloads), then
give the folder to the server with EMBED_WEIGHTS_DIR=DIR. Each model lands in DIR/<name>/.
"""

from __future__ import annotations

import os

# Must precede every Hugging Face import: the server's modules default to offline.
os.environ["HF_HUB_OFFLINE"] = "0"

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from embed_server.config import MODEL_NAMES
    from embed_server.models import CARDS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="folder to fill (EMBED_WEIGHTS_DIR)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated model names")
    args = parser.parse_args(argv)

    from huggingface_hub import snapshot_download

    for name in (n.strip() for n in args.models.split(",") if n.strip()):
        if name not in CARDS:
            parser.error(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
        card = CARDS[name]
        target = args.dir / name
        print(f"{name}: {card.pretrained_id} -> {target}", flush=True)
        # Some of these repositories (DINOv3) are gated: set HF_TOKEN after accepting
        # the licence on the model's page.
        snapshot_download(card.pretrained_id, local_dir=target, token=os.environ.get("HF_TOKEN") or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench.quality.token_bytes`: bytes per gallery point of each token compaction, per model.

    python -m bench.quality.token_bytes --compactions full,int8,pool2-int8,binary

The grid and patch dimension of every model come from the model cards the embed
server's `ListModels` reports (`service_common.model_registry`), so no server or
weights are needed; the bytes are `search_gateway.gallery.tokens.Compaction.
bytes_per_point` (token data only, before the store's own overhead). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import sys

from search_gateway.gallery import tokens
from service_common import model_registry


def table(compactions: list[tokens.Compaction]) -> str:
    head = ["model", "grid x dim", *(c.name for c in compactions)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in model_registry.list_models():
        card = model_registry.get_card(name)
        grid = card.grid
        cells = [name, f"{grid[0]}x{grid[1]} x {card.patch_dim}",
                 *(_size(c.bytes_per_point(grid, card.patch_dim)) for c in compactions)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size(count: int) -> str:
    return f"{count} B" if count < 1024 else f"{count / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.token_bytes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compactions", default="full,fp16,int8,binary,pool2,pool2-int8,pool2-binary,top32-int8")
    args = parser.parse_args(argv)
    try:
        compactions = [tokens.parse(v) for v in args.compactions.split(",") if v.strip()]
    except tokens.TokenCompactionError as exc:
        print(f"token_bytes: {exc}", file=sys.stderr)
        return 2
    print(table(compactions))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bytes of the thumbnail a web point keeps (collections/web_thumbnails.py), per picture.

    python -m bench.thumbnail_bytes [--sources 60] [--seed 0] [--folder DIR ...]

Runs the gateway's own ``fetch.images.webp_thumbnail`` (256 px longest side, WebP quality 75)
on the bytes the writer would hand it, and prints the median, p90, mean and largest size per
set, and the time per thumbnail. Sets:

- ``line art``: the near-duplicate benchmark's pictures (bench/quality/near_duplicates.py:
  flash-sheet designs on paper and on skin, 256 px, JPEG quality 92), the product's subject;
- ``photos``: scikit-image's bundled photographs (bench/quality/photos.py: 300-1000 px,
  JPEG quality 92), real camera noise, which costs a WebP the most bytes;
- any ``--folder`` of images (every file Pillow opens), e.g. real web downloads.

Same seed, same bytes (the generators are seeded).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from search_gateway.fetch.images import KEPT_QUALITY, KEPT_SIDE, webp_thumbnail


def _files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in
            (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")]


def measure(name: str, pictures: list[bytes]) -> str:
    sizes, start = [], time.perf_counter()
    for data in pictures:
        sizes.append(len(webp_thumbnail(data, max_pixels=40_000_000)))
    per_ms = (time.perf_counter() - start) * 1000 / max(1, len(sizes))
    sizes.sort()
    p90 = sizes[min(len(sizes) - 1, int(0.9 * len(sizes)))]
    return (f"| {name} | {len(sizes)} | {statistics.median(sizes):,.0f} | {p90:,} | {statistics.mean(sizes):,.0f} "
            f"| {sizes[-1]:,} | {per_ms:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=60, help="near-duplicate source designs (6 views each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, action="append", default=[], help="more pictures to measure")
    args = parser.parse_args(argv)
    from bench.quality import near_duplicates, photos

    print(f"# thumbnails: {KEPT_SIDE} px WebP q{KEPT_QUALITY}; python {platform.python_version()}, "
          f"{platform.machine()}, {sys.platform}")
    print("| set | pictures | median bytes | p90 | mean | largest | ms each |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        drawn = Path(tmp) / "near"
        near_duplicates.generate(drawn, near_duplicates.Sizes(sources=args.sources, distractors=args.sources),
                                 seed=args.seed)
        print(measure("line art (near-duplicate set)", _files(drawn)))
        shot = Path(tmp) / "photos"
        photos.generate(shot, seed=args.seed)
        print(measure("photos (scikit-image)", _files(shot)))
    for folder in args.folder:
        print(measure(str(folder), _files(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

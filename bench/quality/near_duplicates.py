"""A deterministic near-duplicate benchmark: drawn designs and altered views of them.

    python -m bench.quality.near_duplicates --out var/quality/near-dup --sources 300

Each source design (`drawing.design`) gets several views, each one alteration:
crop, rotation, perspective, colour and contrast, blur, JPEG quality, partial
occlusion, or the ink tattooed on a body-like background. Queries are views; the
gallery holds the source and its other views, plus distractor designs that have no
views. Written as the folder-per-identity layout (`queries/<id>/`, `gallery/<id>/`,
`gallery/_distractors/`) that `layouts.read_folder` reads, with `manifest.json`
saying what every file is and how it was made.

Same seed, same bytes: all randomness comes from string-seeded generators per
source, so source i is identical at every size, and files are written as baseline
JPEG (no timestamps, no metadata).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from bench.quality.drawing import SIZE, design, on_body

QUALITY = 92  # of every written file; the `jpeg` view degrades far below this first

View = Callable[[random.Random, Image.Image, Image.Image], tuple[Image.Image, dict[str, object]]]


def _crop(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    side = int(SIZE * rng.uniform(0.6, 0.85))
    left, top = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
    box = (left, top, left + side, top + side)
    return image.crop(box).resize((SIZE, SIZE), Image.Resampling.BICUBIC), {"box": list(box)}


def _corner(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((2, 2))  # type: ignore[return-value]


def _rotate(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    angle = rng.choice((-1, 1)) * rng.uniform(10, 35)
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=_corner(image))
    return rotated, {"degrees": round(angle, 3)}


def _perspective_coefficients(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> list[float]:
    """PIL's 8 PERSPECTIVE coefficients mapping output points `target` to input points `source`."""
    rows, values = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    return [float(c) for c in np.linalg.solve(np.array(rows, dtype=np.float64), np.array(values, dtype=np.float64))]


def _perspective(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    corners = [(0.0, 0.0), (SIZE, 0.0), (SIZE, SIZE), (0.0, SIZE)]
    jitter = 0.18 * SIZE
    # Each corner moves inwards by its own amount: a plane seen at a slant.
    moved = [(x + rng.uniform(0, jitter) * (1 if x == 0 else -1), y + rng.uniform(0, jitter) * (1 if y == 0 else -1))
             for x, y in corners]
    coefficients = _perspective_coefficients(corners, moved)
    warped = image.transform((SIZE, SIZE), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC,
                             fillcolor=_corner(image))
    return warped, {"corners": [[round(x, 2), round(y, 2)] for x, y in moved]}


def _colour(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    saturation, contrast, brightness = rng.uniform(0.2, 1.8), rng.uniform(0.55, 1.5), rng.uniform(0.7, 1.3)
    tint = [rng.uniform(0.85, 1.15) for _ in range(3)]
    out = ImageEnhance.Color(image).enhance(saturation)
    out = ImageEnhance.Contrast(out).enhance(contrast)
    out = ImageEnhance.Brightness(out).enhance(brightness)
    pixels = np.asarray(out, dtype=np.float32) * np.asarray(tint, dtype=np.float32)
    params = {"saturation": round(saturation, 3), "contrast": round(contrast, 3), "brightness": round(brightness, 3),
              "tint": [round(t, 3) for t in tint]}
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"), params


def _blur(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    radius = rng.uniform(1.5, 3.5)
    return image.filter(ImageFilter.GaussianBlur(radius)), {"radius": round(radius, 3)}


def _jpeg(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    quality = rng.randint(6, 25)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as degraded:
        return degraded.convert("RGB"), {"quality": quality}


def _occlude(rng: random.Random, image: Image.Image, _: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    out = image.copy()
    width, height = int(SIZE * rng.uniform(0.3, 0.55)), int(SIZE * rng.uniform(0.3, 0.55))
    left, top = rng.randint(0, SIZE - width), rng.randint(0, SIZE - height)
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    shape = rng.choice(("rectangle", "ellipse"))
    box = [left, top, left + width, top + height]
    getattr(ImageDraw.Draw(out), shape)(box, fill=colour)
    return out, {"shape": shape, "box": box, "colour": list(colour)}


def _body(rng: random.Random, _: Image.Image, layer: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    return on_body(rng, layer)


VIEWS: dict[str, View] = {
    "crop": _crop, "rotate": _rotate, "perspective": _perspective, "colour": _colour,
    "blur": _blur, "jpeg": _jpeg, "occlude": _occlude, "body": _body,
}


@dataclass(frozen=True)  # no slots: the defaults double as the CLI's
class Sizes:
    sources: int = 300
    views: int = 6  # per source, each a different alteration
    queries_per_source: int = 1  # of the views; the others go to the gallery
    distractors: int = 300

    def check(self) -> None:
        if self.sources < 1 or self.distractors < 0:
            raise ValueError("sources must be at least 1 and distractors at least 0")
        if not 1 <= self.views <= len(VIEWS):
            raise ValueError(f"views must be between 1 and {len(VIEWS)}")
        if not 1 <= self.queries_per_source <= self.views:
            raise ValueError("queries per source must be between 1 and views")


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def generate(out: Path, sizes: Sizes = Sizes(), seed: int = 0) -> Path:
    """Write the benchmark into the empty (or new) folder `out`; returns the manifest's path."""
    sizes.check()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder (files there would mix with this benchmark's)")
    entries: list[dict[str, object]] = []

    def write(relative: str, image: Image.Image, **facts: object) -> None:
        data = _encode(image)
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append({"path": relative, "sha256": hashlib.sha256(data).hexdigest(), **facts})

    for index in range(sizes.sources):
        identity = f"s{index:04d}"
        rng = random.Random(f"near-dup:{seed}:source:{index}")
        image, layer, drawn = design(rng)
        write(f"gallery/{identity}/{identity}-original.jpg", image, split="gallery", identity=identity,
              view="original", params=drawn)
        for number, name in enumerate(rng.sample(sorted(VIEWS), sizes.views)):
            view_rng = random.Random(f"near-dup:{seed}:source:{index}:view:{number}")
            altered, params = VIEWS[name](view_rng, image, layer)
            split = "queries" if number < sizes.queries_per_source else "gallery"
            write(f"{split}/{identity}/{identity}-v{number}-{name}.jpg", altered, split=split, identity=identity,
                  view=name, params=params)
    for index in range(sizes.distractors):
        image, _, drawn = design(random.Random(f"near-dup:{seed}:distractor:{index}"))
        write(f"gallery/_distractors/d{index:04d}.jpg", image, split="gallery", identity=None, view="original",
              params=drawn)
    manifest = out / "manifest.json"
    summary = {"generator": "bench.quality.near_duplicates", "seed": seed, "sources": sizes.sources,
               "views": sizes.views, "queries_per_source": sizes.queries_per_source,
               "distractors": sizes.distractors, "size": SIZE, "files": entries}
    manifest.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--sources", type=int, default=Sizes.sources)
    parser.add_argument("--views", type=int, default=Sizes.views)
    parser.add_argument("--queries-per-source", type=int, default=Sizes.queries_per_source)
    parser.add_argument("--distractors", type=int, default=None, help="default: as many as sources")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    distractors = args.sources if args.distractors is None else args.distractors
    try:
        manifest = generate(args.out, Sizes(args.sources, args.views, args.queries_per_source, distractors), args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"near_duplicates: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

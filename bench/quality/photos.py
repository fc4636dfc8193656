"""A small benchmark of real photographs, from scikit-image's bundled samples (no download).

    python -m bench.quality.photos --out var/quality/photos

Two parts, written as the folder-per-identity layout that `layouts.read_folder` reads:

- the stereo pair (`skimage.data.stereo_motorcycle()`): the left and the right view of
  one motorcycle, taken a few centimetres apart: the left view is a query whose one
  hit is the right one, among every other photo;
- each colour photo (astronaut, coffee, chelsea, rocket, ...) altered by the
  near-duplicate generator's own views (crop, rotation, perspective, colour, blur,
  JPEG, occlusion: `near_duplicates.VIEWS`, without the tattoo-on-skin one), the
  views as queries, the photo and its other views in the gallery; the greyscale
  samples (camera, coins, moon, ...) are distractors only.

Drawn line art says little about a model's colour handling (channel order, mean
subtraction: the drawings are mostly black on paper); photographs do, which is why
the quality tests use both. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.quality.drawing import SIZE
from bench.quality.near_duplicates import VIEWS

COLOUR = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "hubble_deep_field", "retina")
GREY = ("camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel")
PHOTO_VIEWS = tuple(name for name in sorted(VIEWS) if name != "body")


def _sample(name: str) -> Image.Image:
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return Image.fromarray(pixels[:, :, :3].astype(np.uint8), "RGB")


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def generate(out: Path, views: int = 3, seed: int = 0) -> Path:
    """Write the benchmark into the empty (or new) folder `out`; returns `out`."""
    import skimage.data

    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    if not 1 <= views <= len(PHOTO_VIEWS) - 1:
        raise ValueError(f"views must be between 1 and {len(PHOTO_VIEWS) - 1}")

    def write(relative: str, image: Image.Image) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(image))

    left, right, _ = skimage.data.stereo_motorcycle()
    write("queries/stereo/motorcycle-left.jpg", Image.fromarray(left))
    write("gallery/stereo/motorcycle-right.jpg", Image.fromarray(right))
    for name in COLOUR:
        rng = random.Random(f"photos:{seed}:{name}")
        # The generator's views work on SIZE-square images (its crops and corners are in those pixels).
        square = _sample(name).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        write(f"gallery/{name}/{name}-original.jpg", square)
        for number, view in enumerate(rng.sample(PHOTO_VIEWS, views + 1)):
            altered, _ = VIEWS[view](random.Random(f"photos:{seed}:{name}:{number}"), square, square)
            split = "queries" if number < views else "gallery"
            write(f"{split}/{name}/{name}-v{number}-{view}.jpg", altered)
    for name in GREY:
        write(f"gallery/_distractors/{name}.jpg", _sample(name))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--views", type=int, default=3, help="query views per colour photo (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.views, args.seed)
    except (ValueError, FileExistsError) as exc:
        print(f"photos: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draws the page's app icons (static/icons/*.png) from the favicon.svg design.

The favicon is a red disc with a white ring and a white dot on a 32-unit grid. The
"any" icons draw it as it is (transparent corners); the maskable one fills the whole
square with the red and keeps the ring inside the central 80 % circle, the part every
launcher's mask keeps. Drawn at 4x and scaled down, for smooth edges.

    .venv/bin/python scripts/make-icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

RED = (0x8C, 0x2F, 0x1B, 255)
WHITE = (255, 255, 255, 255)
OUT = Path(__file__).resolve().parents[1] / "search_gateway" / "http" / "static" / "icons"
SUPER = 4


def _disc(draw: ImageDraw.ImageDraw, c: float, r: float, fill: tuple[int, ...]) -> None:
    draw.ellipse((c - r, c - r, c + r, c + r), fill=fill)


def icon(size: int, maskable: bool) -> Image.Image:
    big = size * SUPER
    unit = big / 32  # the favicon's grid
    image = Image.new("RGBA", (big, big), RED if maskable else (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    c = big / 2
    if maskable:
        unit *= 0.8  # the design shrunk into the safe zone (a circle of 80 % of the side)
    else:
        _disc(draw, c, 14 * unit, RED)
    # The ring: radius 8, stroke 2.5 (a white disc with a red one inside), then the dot.
    _disc(draw, c, (8 + 1.25) * unit, WHITE)
    _disc(draw, c, (8 - 1.25) * unit, RED)
    _disc(draw, c, 2.5 * unit, WHITE)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        icon(size, maskable=False).save(OUT / f"icon-{size}.png", optimize=True)
    icon(512, maskable=True).save(OUT / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()

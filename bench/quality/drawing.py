"""Procedural line-art motifs and backgrounds for the synthetic near-duplicate benchmark.

Flash-sheet-like designs drawn from a seed: radial (mandala, sun), nested polygons,
serpent curves and scattered emblems, in black or coloured ink, some shapes filled.
Each design comes as a transparent RGBA layer so a view can put the same ink on
another ground (a body). Same seed, same pixels: everything derives from a
`random.Random` seeded with a string, which is stable across runs and platforms.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
_SCALE = 2  # drawn at twice the size and reduced: smooth lines without PIL's antialiasing
PAPERS = ((244, 237, 228), (250, 246, 235), (236, 228, 214), (240, 240, 236))
SKINS = ((241, 209, 184), (224, 172, 138), (198, 134, 97), (160, 105, 70), (110, 70, 48))
INKS = ((18, 18, 18), (24, 30, 58), (52, 22, 24))
FILLS = ((200, 30, 40), (40, 130, 60), (235, 180, 40), (70, 120, 220), (170, 80, 200))

Point = tuple[float, float]
Colour = tuple[int, int, int, int]


def _petal(cx: float, cy: float, length: float, width: float, angle: float) -> list[Point]:
    """Pointed oval from (cx, cy) outwards along `angle`."""
    half = [(length * (1 - math.cos(t)) / 2, width * math.sin(t) / 2) for t in np.linspace(0, math.pi, 20)]
    outline = half + [(x, -y) for x, y in reversed(half)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in outline]


def _polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[Point]:
    return [(cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def _star(cx: float, cy: float, r: float, points: int, angle: float) -> list[Point]:
    out = []
    for k in range(points * 2):
        radius = r if k % 2 == 0 else r * 0.45
        a = angle + math.pi * k / points
        out.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return out


class _Pen:
    def __init__(self, draw: ImageDraw.ImageDraw, rng: random.Random, ink: Colour, fills: Sequence[Colour], width: int):
        self.draw, self.rng, self.ink, self.fills, self.width = draw, rng, ink, fills, width

    def fill(self) -> Colour | None:
        return self.rng.choice(self.fills) if self.fills and self.rng.random() < 0.6 else None

    def shape(self, points: list[Point]) -> None:
        self.draw.polygon([(x * _SCALE, y * _SCALE) for x, y in points], fill=self.fill(), outline=self.ink,
                          width=self.width)

    def circle(self, cx: float, cy: float, r: float, filled: bool = False) -> None:
        box = [(cx - r) * _SCALE, (cy - r) * _SCALE, (cx + r) * _SCALE, (cy + r) * _SCALE]
        self.draw.ellipse(box, fill=self.ink if filled else self.fill(), outline=self.ink, width=self.width)

    def line(self, points: list[Point], extra: int = 0) -> None:
        self.draw.line([(x * _SCALE, y * _SCALE) for x, y in points], fill=self.ink, width=self.width + extra,
                       joint="curve")


def _radial(pen: _Pen) -> None:
    rng, c = pen.rng, SIZE / 2
    folds = rng.choice((6, 8, 10, 12, 16))
    for ring in range(rng.randint(2, 4), 0, -1):
        length = rng.uniform(28, 40) * ring
        for k in range(folds):
            angle = 2 * math.pi * (k + 0.5 * (ring % 2)) / folds
            pen.shape(_petal(c, c, length, length * rng.uniform(0.2, 0.45), angle))
    pen.circle(c, c, rng.uniform(8, 24))
    if rng.random() < 0.5:
        for k in range(folds * 2):
            a = 2 * math.pi * k / (folds * 2)
            pen.circle(c + 116 * math.cos(a), c + 116 * math.sin(a), 2.5, filled=True)


def _nested(pen: _Pen) -> None:
    rng, c = pen.rng, SIZE / 2
    sides, spin, twist = rng.choice((3, 4, 5, 6, 8)), rng.uniform(0, math.pi), rng.uniform(-0.4, 0.4)
    for k in range(rng.randint(3, 6), 0, -1):
        pen.shape(_polygon(c, c, 20 * k + 8, sides, spin + k * twist))
    if rng.random() < 0.6:
        for x, y in _polygon(c, c, 118, sides, spin):
            pen.line([(c, c), (x, y)])


def _serpent(pen: _Pen) -> None:
    rng = pen.rng
    amplitude, turns, phase = rng.uniform(25, 60), rng.uniform(1.0, 2.8), rng.uniform(0, math.pi)
    tilt = rng.uniform(-0.6, 0.6)
    points = []
    for i in range(101):
        x = 20 + i * 2.16
        y = SIZE / 2 + amplitude * math.sin(phase + i / 100 * turns * 2 * math.pi) + (x - SIZE / 2) * tilt
        points.append((x, y))
    pen.line(points, extra=rng.randint(6, 16))
    hx, hy = points[-1]
    pen.circle(hx, hy, rng.uniform(9, 15), filled=True)
    for _ in range(rng.randint(0, 4)):
        pen.shape(_star(rng.uniform(30, SIZE - 30), rng.uniform(30, SIZE - 30), rng.uniform(8, 18), 5, rng.uniform(0, 6)))


def _emblems(pen: _Pen) -> None:
    rng = pen.rng
    for _ in range(rng.randint(3, 7)):
        x, y, r = rng.uniform(50, SIZE - 50), rng.uniform(50, SIZE - 50), rng.uniform(18, 55)
        kind = rng.randrange(4)
        if kind == 0:
            pen.circle(x, y, r)
        elif kind == 1:
            pen.shape(_star(x, y, r, rng.choice((4, 5, 6, 8)), rng.uniform(0, math.pi)))
        elif kind == 2:
            pen.shape(_petal(x, y, r * 1.6, r * 0.7, rng.uniform(0, 2 * math.pi)))
        else:
            pen.line([(x - r, y - r * rng.uniform(-1, 1)), (x + r, y + r * rng.uniform(-1, 1))], extra=2)


FAMILIES: tuple[tuple[str, Callable[[_Pen], None]], ...] = (
    ("radial", _radial), ("nested", _nested), ("serpent", _serpent), ("emblems", _emblems)
)


def motif_layer(rng: random.Random) -> tuple[Image.Image, str]:
    """A design as ink on transparency (RGBA, SIZE x SIZE) and its family's name."""
    name, draw = FAMILIES[rng.randrange(len(FAMILIES))]
    ink = (*rng.choice(INKS), 255)
    coloured = rng.random() < 0.5
    fills = tuple((*f, rng.choice((150, 255))) for f in FILLS) if coloured else ((*ink[:3], 255),)
    layer = Image.new("RGBA", (SIZE * _SCALE, SIZE * _SCALE), (0, 0, 0, 0))
    pen = _Pen(ImageDraw.Draw(layer), rng, ink, fills if rng.random() < 0.8 else (), rng.choice((2, 4, 6, 8)))
    draw(pen)
    return layer.resize((SIZE, SIZE), Image.Resampling.LANCZOS), name


def textured(rng: random.Random, colour: tuple[int, int, int], size: int = SIZE, strength: float = 7.0) -> Image.Image:
    """A flat colour with soft blotches, as paper or skin is never uniform."""
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0, 1, (8, 8, 1))
    low = np.asarray(Image.fromarray(((noise[..., 0] + 3) * 40).clip(0, 255).astype(np.uint8))
                     .resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 40 - 3
    pixels = np.asarray(colour, dtype=np.float32)[None, None, :] + strength * low[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def design(rng: random.Random) -> tuple[Image.Image, Image.Image, dict[str, object]]:
    """A source image (the design on paper or skin), its ink layer, and what was drawn."""
    layer, family = motif_layer(rng)
    ground_kind = "skin" if rng.random() < 0.5 else "paper"
    colour = rng.choice(SKINS if ground_kind == "skin" else PAPERS)
    ground = textured(rng, colour)
    image = Image.alpha_composite(ground.convert("RGBA"), layer).convert("RGB")
    return image, layer, {"family": family, "ground": ground_kind, "ground_colour": list(colour)}


def on_body(rng: random.Random, layer: Image.Image) -> tuple[Image.Image, dict[str, object]]:
    """The ink layer tattooed on a shaded limb across a cloth background."""
    cloth = textured(rng, tuple(rng.randint(40, 120) for _ in range(3)), strength=12)  # type: ignore[arg-type]
    skin = np.asarray(rng.choice(SKINS), dtype=np.float32)
    angle = rng.uniform(-0.8, 0.8)
    half_width = rng.uniform(0.3, 0.42) * SIZE
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - SIZE / 2
    across = np.abs(xs * math.cos(angle) + ys * math.sin(angle)) / half_width  # 0 on the limb's axis
    inside = across < 1
    shade = (1.0 - 0.35 * across**2)[..., None]
    pixels = np.asarray(cloth, dtype=np.float32)
    pixels = np.where(inside[..., None], skin[None, None, :] * shade, pixels)
    scale = rng.uniform(0.45, 0.65)
    side = int(SIZE * scale)
    ink = layer.resize((side, side), Image.Resampling.LANCZOS).rotate(math.degrees(-angle) + rng.uniform(-15, 15),
                                                                      resample=Image.Resampling.BICUBIC, expand=True)
    ink = ink.filter(ImageFilter.GaussianBlur(0.6))  # ink sits in the skin, edges soften
    canvas = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    canvas.paste(ink, ((SIZE - ink.width) // 2, (SIZE - ink.height) // 2), ink)
    rgba = np.asarray(canvas, dtype=np.float32) / 255
    alpha = rgba[..., 3:4] * 0.85 * inside[..., None]
    tattooed = pixels * (1 - alpha) + pixels * rgba[..., :3] * alpha  # multiply: ink darkens the skin it is in
    image = Image.fromarray(tattooed.clip(0, 255).astype(np.uint8), "RGB")
    return image, {"limb_angle": round(angle, 4), "scale": round(scale, 4)}

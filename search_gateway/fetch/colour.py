"""Colour facts of an image, computed once from its pixels where it is decoded: its colour
scheme (black-and-grey or colour) and a small dominant palette.

Both work in CIELAB on at most ``SAMPLE_SIDE``² pixels (a thumbnail of what was decoded),
so they cost a few ms whatever the image's size (docs/benchmarks.md, "Colour scheme").

The scheme. A pixel is *inked with colour* when its chroma, measured from the image's own
dominant tint, is above ``CHROMA_LEVEL``; pixels near white (paper, highlights) and near
black (line work) never count. Measuring from the dominant tint (the median a*, b* of the
image, when that tint is mild) keeps a sepia-toned photo or grey ink on skin grey: their
pixels all lean one way, and only ink of another hue stands out. The image is ``colour``
when at least ``COLOUR_SHARE`` of its mid-tone pixels are inked with colour. Both levels
were measured on a generated set of known schemes (bench/colour_scheme.py).

The palette: k-means (k = ``PALETTE_SIZE``) of the sampled pixels in CIELAB, where a
Euclidean distance is a colour difference a person sees (deltaE 1976), dominant first,
with each colour's share of the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

BLACK_AND_GREY, COLOUR = "black_and_grey", "colour"
SCHEMES = (BLACK_AND_GREY, COLOUR)
# Measured (bench/colour_scheme.py): the levels with the best balanced accuracy on the
# tuning seed, reported on another seed in docs/benchmarks.md.
CHROMA_LEVEL = 12.0
COLOUR_SHARE = 0.005
# Lightness bounds of the pixels judged: above is paper or glare, below is black line work.
_WHITE_L, _BLACK_L = 92.0, 12.0
# A dominant tint up to this chroma is taken out (sepia, skin, warm paper); a stronger one
# is the colour of the image itself and is kept.
_TINT_LIMIT = 40.0
SAMPLE_SIDE = 64
PALETTE_SIZE = 5
PALETTE_PIXELS = 1024
_ITERATIONS = 10


@dataclass(frozen=True)
class ColourFacts:
    scheme: str  # BLACK_AND_GREY or COLOUR
    palette: tuple[str, ...]  # "#rrggbb", dominant first
    shares: tuple[float, ...]  # each palette colour's share of the pixels, summing to 1
    colour_share: float  # the share of mid-tone pixels inked with colour (what the scheme is read from)


def sample(image: Image.Image) -> Image.Image:
    """At most SAMPLE_SIDE on its longer side, in RGB (a box filter: every pixel counts)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb.size) > SAMPLE_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((SAMPLE_SIDE, SAMPLE_SIDE), Image.Resampling.BOX)
    return rgb


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0..255 to CIELAB (D65), the textbook formulas."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_hex(lab: np.ndarray) -> str:
    light, a, b = (float(v) for v in lab)
    fy = (light + 16) / 116
    f = np.array([fy + a / 500, fy, fy - b / 200])
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    m_inv = np.array([[3.2404542, -1.5371385, -0.4985314],
                      [-0.9692660, 1.8760108, 0.0415560],
                      [0.0556434, -0.2040259, 1.0572252]])
    linear = np.clip(m_inv @ xyz, 0, 1)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    r, g, b8 = (int(round(float(v) * 255)) for v in np.clip(srgb, 0, 1))
    return f"#{r:02x}{g:02x}{b8:02x}"


def hex_to_lab(colour: str) -> np.ndarray:
    text = colour.lstrip("#")
    return rgb_to_lab(np.array([int(text[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.float64))


def colour_share(lab: np.ndarray, level: float = CHROMA_LEVEL) -> float:
    """The share of mid-tone pixels (rows of ``lab``) inked with colour, relative to the dominant tint.

    Against a tint (skin, sepia) a pixel is inked with colour when it leaves the tint's hue
    (its chroma across the tint's direction is above ``level``) or is more saturated than the
    tint in the same hue; darker or lighter shades of the tint (grey ink over skin: the
    skin's colour scaled down) are not."""
    ab = lab[:, 1:]
    mid = (lab[:, 0] > _BLACK_L) & (lab[:, 0] < _WHITE_L)
    if not mid.any():
        return 0.0
    ab = ab[mid]
    tint = np.median(lab[:, 1:], axis=0)
    strength = float(np.hypot(*tint))
    if strength < 3.0 or strength > _TINT_LIMIT:  # no tint to speak of, or the image's own colour
        return float(np.mean(np.hypot(*ab.T) > level))
    direction = tint / strength
    along = ab @ direction
    across = np.abs(ab[:, 0] * direction[1] - ab[:, 1] * direction[0])
    return float(np.mean((across > level) | (along > strength + level)))


def _nearest(lab: np.ndarray, centres: np.ndarray) -> np.ndarray:
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centre, so left out.
    nearest: np.ndarray = np.argmin((centres * centres).sum(1)[None, :] - 2 * lab @ centres.T, axis=1)
    return nearest


def palette(lab: np.ndarray, k: int = PALETTE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(centres k'x3, shares k'), dominant first; k' <= k (fewer distinct colours, fewer centres).

    On at most PALETTE_PIXELS pixels (every n-th). Deterministic: the first centre is the
    mean, each next one the pixel farthest from the centres so far (a k-means++ without the
    dice), then Lloyd's iterations."""
    lab = lab[:: max(1, len(lab) // PALETTE_PIXELS)]
    centres = [lab.mean(axis=0)]
    d = ((lab - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        far = int(np.argmax(d))
        if d[far] < 1.0:  # every pixel already within deltaE 1 of a centre
            break
        centres.append(lab[far])
        d = np.minimum(d, ((lab - lab[far]) ** 2).sum(1))
    c = np.array(centres)
    for _ in range(_ITERATIONS):
        nearest = _nearest(lab, c)
        counts = np.bincount(nearest, minlength=len(c)).astype(np.float64)
        sums = np.stack([np.bincount(nearest, weights=lab[:, j], minlength=len(c)) for j in range(3)], axis=1)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        if np.allclose(moved, c, atol=0.1):
            break
        c = moved
    counts = np.bincount(_nearest(lab, c), minlength=len(c)).astype(np.float64)
    keep = counts > 0
    c, shares = c[keep], counts[keep] / counts.sum()
    order = np.argsort(-shares, kind="stable")
    return c[order], shares[order]


def colour_facts(image: Image.Image) -> ColourFacts:
    """The scheme and palette of a decoded image (any size: it is sampled first)."""
    lab = rgb_to_lab(np.asarray(sample(image), dtype=np.uint8).reshape(-1, 3))
    share = colour_share(lab)
    centres, shares = palette(lab)
    return ColourFacts(COLOUR if share >= COLOUR_SHARE else BLACK_AND_GREY,
                       tuple(lab_to_hex(c) for c in centres), tuple(round(float(s), 4) for s in shares),
                       round(share, 4))


def palette_nearness(colour: str, palette_hex: tuple[str, ...] | list[str], shares: tuple[float, ...] | list[float],
                     *, sigma: float = 20.0, full_share: float = 0.10) -> float:
    """How near ``colour`` is to a palette, in [0, 1]: the best over the palette's colours of
    exp(-(deltaE/sigma)^2) (deltaE 1976 in CIELAB; 1 for the same colour, 0.08 at deltaE 32),
    weighted by the colour's share up to ``full_share`` (a colour covering a tenth of the
    image counts fully; a smaller accent in proportion). 0 for an empty palette."""
    if not palette_hex:
        return 0.0
    target = hex_to_lab(colour)
    best = 0.0
    for hex_colour, share in zip(palette_hex, shares, strict=False):
        delta = float(np.linalg.norm(hex_to_lab(hex_colour) - target))
        best = max(best, min(1.0, share / full_share) * float(np.exp(-((delta / sigma) ** 2))))
    return best

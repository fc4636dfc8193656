"""Calibration pictures for static int8: what activation ranges are measured on.

Static quantisation fixes every activation's int8 range at export time, from the
model's outputs on a calibration set; ranges measured on pictures unlike the traffic
clip real activations (or waste the 256 levels). The server must be able to calibrate
anywhere it exports, so the set is drawn here, from a seed, with no files and no
network: tattoo-like line art (strokes, rings, polygons, some filled, in dark or
coloured ink) on paper- or skin-coloured grounds with grain, some of it blurred,
rotated, darkened or photographed at a slant. It shares no code and no seed with the
benchmark's near-duplicate generator (bench/quality), so calibration never sees a
test image.

`CALIBRATION_SET` names the set in export cache keys: change it whenever the pictures
change (generator, count or seed), so ranges measured on another set are never reused.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from embed_server.models.cards import ModelCard

COUNT = 32
SEED = 7
VERSION = 1
CALIBRATION_SET = f"cal{VERSION}n{COUNT}s{SEED}"

_SIZE = 320
_GROUNDS = ((244, 237, 228), (236, 228, 214), (241, 209, 184), (224, 172, 138), (198, 134, 97), (110, 70, 48))
_INKS = ((18, 18, 18), (24, 30, 58), (52, 22, 24), (200, 30, 40), (40, 130, 60), (70, 120, 220))


def picture(index: int, seed: int = SEED) -> Image.Image:
    """One calibration picture; the same (index, seed) gives the same pixels."""
    rng = random.Random(f"int8-calibration:{seed}:{index}")
    ground = np.asarray(rng.choice(_GROUNDS), dtype=np.float32)
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 12), (_SIZE, _SIZE, 1))
    image = Image.fromarray(np.clip(ground + grain, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 14)):
        ink = rng.choice(_INKS)
        cx, cy, r = rng.uniform(40, _SIZE - 40), rng.uniform(40, _SIZE - 40), rng.uniform(10, _SIZE / 2.5)
        width = rng.randint(1, 7)
        kind = rng.randrange(4)
        if kind == 0:  # rings and ellipses
            box = (cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r * rng.uniform(0.5, 1))
            draw.ellipse(box, outline=ink, width=width, fill=ink if rng.random() < 0.2 else None)
        elif kind == 1:  # polygons and stars
            sides = rng.randint(3, 9)
            turn = rng.uniform(0, 6.3)
            points = [(cx + r * np.cos(turn + 6.2832 * k / sides), cy + r * np.sin(turn + 6.2832 * k / sides))
                      for k in range(sides)]
            draw.polygon(points, outline=ink, width=width, fill=ink if rng.random() < 0.3 else None)
        elif kind == 2:  # a stroke of several segments
            points = [(cx, cy)]
            for _ in range(rng.randint(2, 8)):
                points.append((points[-1][0] + rng.uniform(-r, r), points[-1][1] + rng.uniform(-r, r)))
            draw.line(points, fill=ink, width=width, joint="curve")
        else:  # radial petals
            petals = rng.randint(5, 16)
            for k in range(petals):
                angle = 6.2832 * k / petals
                draw.line([(cx, cy), (cx + r * np.cos(angle), cy + r * np.sin(angle))], fill=ink, width=width)
    alteration = rng.randrange(5)
    if alteration == 1:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
    elif alteration == 2:
        image = image.rotate(rng.uniform(-30, 30), resample=Image.Resampling.BICUBIC, fillcolor=tuple(ground.astype(int)))
    elif alteration == 3:
        image = Image.fromarray((np.asarray(image, dtype=np.float32) * rng.uniform(0.35, 0.8)).astype(np.uint8), "RGB")
    elif alteration == 4:  # a slanted, non-square photo of it
        image = image.resize((_SIZE, int(_SIZE * rng.uniform(0.6, 0.85))), Image.Resampling.BILINEAR)
    return image


def calibration_pixels(card: ModelCard, count: int = COUNT, seed: int = SEED) -> np.ndarray:
    """(count, 3, S, S) float32: the set through the model's own preprocessing."""
    return np.stack([card.preprocess(picture(index, seed)) for index in range(count)]).astype(np.float32)

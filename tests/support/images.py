"""Real encoded images for tests, made with Pillow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def noise_image(seed: int, size: tuple[int, int] = (320, 240), mode: str = "RGB") -> Image.Image:
    """A picture with structure (blocks of colour plus noise) that differs by seed, so
    models with random weights still give different vectors for different seeds."""
    rng = np.random.default_rng(seed)
    width, height = size
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(blocks, "RGB").resize((width, height), Image.Resampling.NEAREST))
    noisy = np.clip(base.astype(np.int16) + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    return encode(noise_image(seed, size), "JPEG", quality=90)

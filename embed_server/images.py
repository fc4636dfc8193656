"""Turning untrusted encoded bytes into an RGB picture, safely.

Web images arrive in every mode Pillow knows. The rules here: bounded pixel count
checked before any pixel is decoded, EXIF orientation applied, the first frame of an
animation, transparency composited onto white (tattoo flash is often black ink on a
transparent background, which would otherwise turn into black on black), and 16-bit
or float greyscale scaled rather than clipped.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"})

# Our own limit is checked before decoding; Pillow's global guard is only a backstop.
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept; the message says why, for a person."""


def decode_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode `data` into an RGB image.

    `draft_size` lets JPEG decoding downscale by 2, 4 or 8 in the decoder itself while
    keeping both sides at least that long: several times faster for large photos, and
    the model resizes further anyway.
    """
    if not data:
        raise ImageDecodeError("it is empty (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("it is not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"it is truncated or corrupt ({exc})") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageDecodeError(
            f"format {image.format} is not accepted (use JPEG, PNG, WebP, GIF or BMP)"
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("it has no pixels")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"it is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    try:
        if draft_size and image.format in ("JPEG", "MPO"):
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        return _to_rgb(upright)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"it is truncated or corrupt ({exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _scale_to_uint8(image).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P, CMYK (Pillow inverts Adobe CMYK JPEGs itself), YCbCr, LAB, HSV
    return image.convert("RGB")


def _scale_to_uint8(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    if image.mode in ("I;16", "I;16B", "I;16L"):
        scaled = array / 257.0
    else:
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")

"""Decoding untrusted bytes: every mode the web sends, and every way it can be wrong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embed_server.images import ImageDecodeError, decode_image
from tests.support.images import encode, noise_image

LIMIT = 10_000_000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(noise_image(1, (64, 48)), fmt), LIMIT)
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_transparent_pixels_become_white_not_black() -> None:
    # Black ink on a transparent background, as tattoo flash is usually published.
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (5, 5, 15, 15))
    decoded = np.asarray(decode_image(encode(rgba, "PNG"), LIMIT))
    assert decoded[0, 0].tolist() == [255, 255, 255]
    assert decoded[10, 10].tolist() == [0, 0, 0]


def test_palette_with_transparency_and_greyscale_with_alpha() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 5, 10))
    decoded = np.asarray(decode_image(encode(palette, "PNG", transparency=0), LIMIT))
    assert decoded[0, 0].tolist() == [255, 0, 0] and decoded[0, 9].tolist() == [255, 255, 255]
    la = Image.new("LA", (4, 4), (0, 0))
    assert np.asarray(decode_image(encode(la, "PNG"), LIMIT))[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    red, green, blue = np.asarray(decode_image(encode(cmyk, "JPEG"), LIMIT))[8, 8].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    assert grey16.mode == "I;16"
    value = np.asarray(decode_image(encode(grey16, "PNG"), LIMIT))[0, 0]
    assert 120 <= value[0] <= 135 and value[0] == value[1] == value[2]


def test_greyscale_and_bilevel() -> None:
    assert decode_image(encode(Image.new("L", (5, 5), 100), "PNG"), LIMIT).getpixel((0, 0)) == (100, 100, 100)
    assert decode_image(encode(Image.new("1", (5, 5), 1), "PNG"), LIMIT).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    red, green, blue = decode_image(data, LIMIT).getpixel((5, 5))
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 10, 20))  # black stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()), LIMIT)
    assert decoded.size == (20, 40)
    assert sum(decoded.getpixel((10, 2))) < 100  # the stripe is now at the top


def test_jpeg_draft_keeps_at_least_the_requested_side() -> None:
    big = encode(noise_image(1, (2000, 1500)), "JPEG")
    decoded = decode_image(big, LIMIT, draft_size=224)
    assert min(decoded.size) >= 224 and decoded.size[0] < 2000


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (encode(noise_image(2, (64, 64)), "GIF")[:2200], "truncated"),
        (b"definitely not an image", "not a recognised image format"),
    ],
)
def test_bad_bytes_raise_a_readable_error(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data, LIMIT)


def test_pixel_limit_is_checked_from_the_header() -> None:
    with pytest.raises(ImageDecodeError, match="over the limit of 100"):
        decode_image(encode(Image.new("L", (11, 10)), "PNG"), 100)

"""Image checks by content (never by header or file name) and the embed-server view.

Runs in a worker thread: decoding is CPU work and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from search_gateway.errors import BadImage, EmptyImage, GatewayError, NotAnImage, PixelBomb, TruncatedImage
from search_gateway.fetch.colour import SAMPLE_SIDE, ColourFacts, colour_facts

# What the embed server decodes (embed.proto); anything else is refused here.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


@dataclass(frozen=True)
class PreparedImage:
    """A checked image: its content hash, original size, and bytes to send for embedding."""

    sha256: str
    width: int
    height: int
    embed_bytes: bytes
    # Its colour scheme and palette, read from the pixels decoded here (fetch/colour.py);
    # None when the pixels could not be read (the embed server then judges the file).
    colour: ColourFacts | None = None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_checked(data: bytes, *, max_pixels: int, label: str = "image") -> Image.Image:
    """Open ``data`` as an image, refusing empty, unknown, oversized and truncated ones."""
    if not data:
        raise EmptyImage(f"The {label} is empty (zero bytes).")
    try:
        with warnings.catch_warnings():
            # The pixel limit is enforced below with a clear error; Pillow's own
            # DecompressionBombWarning would only add noise (and fails the tests).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise PixelBomb(f"The {label} has more pixels than allowed.") from None
    except UnidentifiedImageError:
        raise NotAnImage(f"The {label} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)}).") from None
    except Exception:
        # Pillow knew the format but its header broke off: a truncated file.
        if data.startswith(_SIGNATURES) or data[8:12] == b"WEBP":
            raise TruncatedImage(f"The {label} is truncated or corrupt.") from None
        raise NotAnImage(f"The {label} could not be read as an image.") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise BadImage(f"The {label} has no pixels.")
    if width * height > max_pixels:
        raise PixelBomb(f"The {label} is {width}x{height} pixels, more than the limit of {max_pixels}.")
    return img


def _decode(img: Image.Image, target_short_side: int, label: str) -> Image.Image:
    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: much cheaper than full size.
    if img.format == "JPEG":
        w, h = img.size
        scale = max(1.0, min(w, h) / target_short_side)
        img.draft("RGB", (int(w / scale), int(h / scale)))
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False (Pillow's default): a truncated
    # file must fail here, not be padded with grey.
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise TruncatedImage(f"The {label} is truncated or corrupt.") from None
    if img.mode in ("RGBA", "LA", "P", "PA"):
        # Composite transparency on white: tattoo flash is usually drawn on paper.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


# Candidates up to this size travel to the embed server as downloaded (no decode here).
PASS_THROUGH_BYTES = 1024 * 1024


def prepare(data: bytes, *, max_pixels: int, short_side: int, label: str = "image", full_check: bool = True) -> PreparedImage:
    """Check ``data`` and produce the bytes sent to the embed server.

    ``full_check`` decodes every pixel (uploads: a person gets a precise 4xx). Without
    it (web candidates, up to a hundred a search) the check is the header, the pixel
    limit and the format's end marker, and the bytes travel unchanged: the embed server
    decodes them anyway (JPEG at reduced scale), so decoding here too would spend the
    CPU the models need. A file corrupt inside is then refused by the embed server.

    Large files are downscaled so the short side is ``short_side`` (twice the models'
    input) and sent as JPEG: the embed server resizes to 224 anyway, and this keeps
    batches small on the wire.
    """
    img = open_checked(data, max_pixels=max_pixels, label=label)
    width, height = img.size
    fmt = img.format
    if not full_check and len(data) <= PASS_THROUGH_BYTES:
        if not _ends_complete(data, fmt):
            raise TruncatedImage(f"The {label} is truncated.")
        return PreparedImage(content_hash(data), width, height, data, _sampled_colour(img))
    rgb = _decode(img, short_side, label)
    colour = colour_facts(rgb)
    small_enough = min(rgb.size) <= short_side and len(data) <= 512 * 1024
    if small_enough and fmt in ("JPEG", "PNG"):
        return PreparedImage(content_hash(data), width, height, data, colour)
    if min(rgb.size) > short_side:
        scale = short_side / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=92)
    return PreparedImage(content_hash(data), width, height, out.getvalue(), colour)


def _sampled_colour(img: Image.Image) -> ColourFacts | None:
    """Colour facts of a file that is otherwise passed through undecoded: the one decode
    of it here, as small as the format allows (a JPEG at 1/8 scale: about a millisecond;
    docs/benchmarks.md, "Colour scheme"). A file that fails to decode gets none, and goes
    on to the embed server as before, which refuses it if it is corrupt."""
    try:
        return colour_facts(_decode(img, SAMPLE_SIDE, "image"))
    except (GatewayError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    short_side: int  # of the bytes sent to the embed server


async def prepare_in_thread(data: bytes, limits: ImageLimits, label: str, *, full_check: bool = True) -> PreparedImage:
    """:func:`prepare` on a worker thread: decoding must not stall the event loop."""
    return await asyncio.to_thread(prepare, data, max_pixels=limits.max_pixels, short_side=limits.short_side,
                                   label=label, full_check=full_check)


def _ends_complete(data: bytes, fmt: str | None) -> bool:
    """Whether the file reaches the end its format declares: catches downloads cut
    short without decoding a pixel. Trailing padding after the end marker is tolerated."""
    tail = data[-64:]
    if fmt == "JPEG":
        return b"\xff\xd9" in tail  # EOI; 0xFF is byte-stuffed inside entropy-coded data
    if fmt == "PNG":
        return b"IEND" in tail
    if fmt == "GIF":
        return data.rstrip(b"\0").endswith(b"\x3b")  # the trailer byte
    if fmt == "WEBP":
        return len(data) >= 8 + int.from_bytes(data[4:8], "little")  # RIFF size
    if fmt == "BMP":
        return len(data) >= int.from_bytes(data[2:6], "little")  # file size field
    return False


def thumbnail(data: bytes, *, max_pixels: int, max_side: int) -> bytes:
    """A JPEG no larger than ``max_side`` on either side, for showing results in a browser."""
    img = open_checked(data, max_pixels=max_pixels)
    rgb = _decode(img, max_side, "image")
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=85)
    return out.getvalue()


# A web point's kept thumbnail (collections/web_thumbnails.py): its longest side and WebP quality.
# 256 px at quality 75 is a few KB (docs/deployment.md: the capacity model has the measured median).
KEPT_SIDE = 256
KEPT_QUALITY = 75


def webp_thumbnail(data: bytes, *, max_pixels: int, side: int = KEPT_SIDE, quality: int = KEPT_QUALITY) -> bytes:
    """A WebP at most ``side`` px on its longest side, to keep for a result whose source may
    go away. Deterministic for the same bytes and Pillow (method 4, no metadata): the same
    picture seen in two model spaces is one blob."""
    img = open_checked(data, max_pixels=max_pixels)
    rgb = _decode(img, side, "image")
    rgb.thumbnail((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    rgb.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()


def decode_rgb(data: bytes, *, max_pixels: int, max_side: int, label: str = "image") -> Image.Image:
    """Decode for drawing (attention pictures), bounded to ``max_side``."""
    img = open_checked(data, max_pixels=max_pixels, label=label)
    rgb = _decode(img, max_side, label)
    rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb

"""A synthetic, offline tattoo catalog: procedurally drawn designs, a manifest, a loopback server.

    python -m scraper_service.demo_catalog --dir var/demo --port 8765

draws the designs into ``var/demo/images/``, writes ``var/demo/manifest.jsonl`` whose
URLs point at ``http://127.0.0.1:8765/``, and serves the folder there until Ctrl-C.
Then run the scraper on it with
``SCRAPER_ENGINES=catalog SCRAPER_CATALOG=var/demo/manifest.jsonl python -m scraper_service``.

The same seed always draws the same pictures, so demos and tests are repeatable.
"""

from __future__ import annotations

import argparse
import functools
import html
import io
import json
import logging
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter

logger = logging.getLogger(__name__)

SIZE = 256
PAPER = (244, 237, 228)
MANIFEST_NAME = "manifest.jsonl"

Colour = tuple[int, int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    ink: Colour  # outlines
    fills: tuple[Colour, ...]  # picked from per shape; alpha < 255 gives a watercolour wash
    width: int


STYLES: tuple[Style, ...] = (
    Style("blackwork", (20, 20, 20, 255), ((20, 20, 20, 255),), 5),
    Style("traditional", (15, 15, 15, 255), ((200, 30, 40, 255), (40, 130, 60, 255), (235, 180, 40, 255)), 6),
    Style("watercolor", (40, 40, 60, 255), ((70, 120, 220, 120), (170, 80, 200, 120), (240, 110, 140, 120)), 2),
    Style("fine-line", (30, 30, 30, 255), (), 2),
)


def _fill(style: Style, rng: random.Random) -> Colour | None:
    return rng.choice(style.fills) if style.fills else None


def _rotate(points: Sequence[Point], angle: float, cx: float, cy: float) -> list[Point]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _petal(cx: float, cy: float, length: float, width: float, angle: float) -> list[Point]:
    """A pointed oval from the centre outwards: the building block of flowers and wings."""
    pts = []
    for i in range(25):
        t = i / 24 * math.pi
        pts.append((cx + length * (1 - math.cos(t)) / 2, cy + width * math.sin(t) / 2))
    pts += [(x, 2 * cy - y) for x, y in reversed(pts)]
    return _rotate(pts, angle, cx, cy)


def _regular(cx: float, cy: float, r: float, sides: int, angle: float) -> list[Point]:
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def draw_rose(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    cx, cy = SIZE / 2, SIZE * 0.42
    d.line([(cx, cy + 40), (cx + rng.uniform(-15, 15), SIZE - 20)], fill=(40, 90, 40, 255), width=st.width)
    for side in (-1, 1):
        d.polygon(_petal(cx, SIZE * 0.72, 45, 20, math.pi / 2 + side * 1.1), fill=(60, 130, 60, 200), outline=st.ink)
    layers = rng.randint(2, 3)
    for layer in range(layers, 0, -1):
        r = 22 * layer + 10
        n = 5 + layer
        offset = rng.uniform(0, math.pi)
        for k in range(n):
            a = offset + 2 * math.pi * k / n
            px, py = cx + r * 0.45 * math.cos(a), cy + r * 0.45 * math.sin(a)
            box = [px - r * 0.55, py - r * 0.55, px + r * 0.55, py + r * 0.55]
            d.ellipse(box, fill=_fill(st, rng), outline=st.ink, width=st.width)
    for k in range(3):  # the spiral heart of the bloom
        r = 8 + 7 * k
        d.arc([cx - r, cy - r, cx + r, cy + r], 40 * k, 40 * k + 270, fill=st.ink, width=max(1, st.width - 1))


def draw_mandala(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c = SIZE / 2
    folds = rng.choice((8, 10, 12, 16))
    for ring in range(3, 0, -1):
        length = 38 * ring
        fill = _fill(st, rng) if ring % 2 else None  # alternate rings stay open
        for k in range(folds):
            a = 2 * math.pi * (k + 0.5 * (ring % 2)) / folds
            d.polygon(_petal(c, c, length, length * 0.35, a), fill=fill, outline=st.ink, width=max(1, st.width // 2))
    for r in (10, 22):
        d.ellipse([c - r, c - r, c + r, c + r], outline=st.ink, width=st.width)
    for k in range(folds * 2):
        a = 2 * math.pi * k / (folds * 2)
        x, y = c + 118 * math.cos(a), c + 118 * math.sin(a)
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=st.ink)


def draw_geometric(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c = SIZE / 2
    sides = rng.choice((3, 4, 6))
    spin = rng.uniform(0, math.pi)
    for k in range(5, 0, -1):
        pts = _regular(c, c, 22 * k, sides, spin + k * 0.3)
        d.polygon(pts, fill=_fill(st, rng) if k % 2 else None, outline=st.ink, width=st.width)
    outer = _regular(c, c, 115, sides, spin)
    for x, y in outer:
        d.line([(c, c), (x, y)], fill=st.ink, width=max(1, st.width // 2))


def draw_heart(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c = SIZE / 2
    scale = rng.uniform(5.0, 6.5)
    pts = []
    for i in range(120):
        t = 2 * math.pi * i / 120
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((c + scale * x, c - scale * y))
    d.polygon(pts, fill=_fill(st, rng), outline=st.ink, width=st.width)
    # A banner across the heart, as in the classic flash sheets.
    y = c + rng.uniform(-5, 15)
    d.rectangle([c - 90, y - 12, c + 90, y + 12], fill=(*PAPER, 255), outline=st.ink, width=st.width)


def draw_moon(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c, r = SIZE / 2, rng.uniform(75, 100)
    d.ellipse([c - r, c - r, c + r, c + r], fill=_fill(st, rng) or st.ink, outline=st.ink, width=st.width)
    dx = r * rng.uniform(0.35, 0.6)
    d.ellipse([c - r + dx, c - r - dx / 3, c + r + dx, c + r - dx / 3], fill=(*PAPER, 255))
    for _ in range(rng.randint(3, 6)):
        x, y, s = rng.uniform(20, SIZE - 20), rng.uniform(20, SIZE - 20), rng.uniform(4, 9)
        d.polygon(_regular(x, y, s, 4, math.pi / 4), fill=st.ink)


def draw_sun(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c = SIZE / 2
    rays = rng.choice((8, 12, 16))
    for k in range(rays):
        a = 2 * math.pi * k / rays
        tip = (c + 118 * math.cos(a), c + 118 * math.sin(a))
        left = (c + 55 * math.cos(a - 0.18), c + 55 * math.sin(a - 0.18))
        right = (c + 55 * math.cos(a + 0.18), c + 55 * math.sin(a + 0.18))
        d.polygon([left, tip, right], fill=_fill(st, rng), outline=st.ink, width=max(1, st.width // 2))
    d.ellipse([c - 55, c - 55, c + 55, c + 55], fill=_fill(st, rng), outline=st.ink, width=st.width)


def draw_snake(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    amp, turns = rng.uniform(30, 55), rng.uniform(1.5, 2.5)
    pts = [(20 + i * 2.1, SIZE / 2 + amp * math.sin(i / 100 * turns * 2 * math.pi)) for i in range(101)]
    d.line(pts, fill=st.ink, width=st.width + 12, joint="curve")
    if st.fills:
        d.line(pts, fill=_fill(st, rng), width=st.width + 4, joint="curve")
    hx, hy = pts[-1]
    d.ellipse([hx - 16, hy - 11, hx + 16, hy + 11], fill=st.ink)
    d.line([(hx + 14, hy), (hx + 28, hy - 4)], fill=(200, 30, 40, 255), width=2)


def draw_butterfly(d: ImageDraw.ImageDraw, rng: random.Random, st: Style) -> None:
    c = SIZE / 2
    upper, lower = rng.uniform(85, 105), rng.uniform(55, 75)
    for side in (-1, 1):
        base = 0 if side == 1 else math.pi
        for length, tilt in ((upper, -side * 0.5), (lower, side * 0.6)):
            wing = _petal(c, c, length, length * 0.7, base + tilt)
            d.polygon(wing, fill=_fill(st, rng), outline=st.ink, width=st.width)
    d.line([(c, c - 45), (c, c + 45)], fill=st.ink, width=st.width + 4)
    for side in (-1, 1):
        d.line([(c, c - 45), (c + side * 20, c - 75)], fill=st.ink, width=2)


@dataclass(frozen=True, slots=True)
class Motif:
    name: str
    tags: tuple[str, ...]
    draw: Callable[[ImageDraw.ImageDraw, random.Random, Style], None]


MOTIFS: tuple[Motif, ...] = (
    Motif("rose", ("flower", "botanical", "floral"), draw_rose),
    Motif("mandala", ("sacred geometry", "ornamental", "dotwork"), draw_mandala),
    Motif("geometric", ("polygon", "lines", "sacred geometry"), draw_geometric),
    Motif("heart", ("love", "banner", "flash"), draw_heart),
    Motif("moon", ("crescent", "stars", "night", "celestial"), draw_moon),
    Motif("sun", ("rays", "celestial"), draw_sun),
    Motif("snake", ("serpent", "reptile"), draw_snake),
    Motif("butterfly", ("wings", "insect", "nature"), draw_butterfly),
)
# Spread over every platform, including none, so the tiers and OTHER show up in demos.
PLATFORMS = ("pinterest", "reddit", "instagram", "")


def render(motif: Motif, style: Style, seed: int) -> Image.Image:
    rng = random.Random(f"{seed}:{motif.name}:{style.name}")  # str seeds are stable across runs
    canvas = Image.new("RGBA", (SIZE, SIZE), (*PAPER, 255))
    layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    motif.draw(ImageDraw.Draw(layer), rng, style)
    return Image.alpha_composite(canvas, layer).convert("RGB")


# Skin tones a "photographed" design is printed on (light to dark).
SKIN = ((236, 200, 170), (214, 170, 135), (170, 120, 90), (120, 80, 60))


def photograph(design: Image.Image, seed: str) -> Image.Image:
    """The design as a phone photo of the tattoo might show it: on skin, turned a few
    degrees, framed a little tighter, lit differently, slightly soft and JPEG-compressed.
    Near-duplicates of the design: a search with one should find the design and its
    other photos first (the demo's check by eye that a model ranks by similarity)."""
    rng = random.Random(seed)
    skin = Image.new("RGB", design.size, rng.choice(SKIN))
    # Multiply: paper becomes skin, ink stays ink (as ink under skin looks).
    inked = ImageChops.multiply(design, skin.point(lambda v: min(255, int(v * 1.08))))
    turned = inked.rotate(rng.uniform(-9, 9), resample=Image.Resampling.BICUBIC, fillcolor=skin.getpixel((0, 0)))
    side = design.size[0]
    margin = int(side * rng.uniform(0.04, 0.1))
    framed = turned.crop((margin, margin, side - margin, side - margin)).resize(design.size, Image.Resampling.BICUBIC)
    lit = ImageEnhance.Brightness(framed).enhance(rng.uniform(0.85, 1.1))
    soft = lit.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    buffer = io.BytesIO()
    soft.save(buffer, "JPEG", quality=rng.randint(55, 80))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def write_catalog(directory: Path, base_url: str, *, count: int = 32, seed: int = 0, photos: int = 0) -> Path:
    """Draw ``count`` designs into ``directory`` and write the manifest; return its path.
    ``photos``: that many photographed near-duplicates of each design besides it."""
    if not 1 <= count <= len(MOTIFS) * len(STYLES) * 4:
        raise ValueError(f"count must be between 1 and {len(MOTIFS) * len(STYLES) * 4}, got {count}")
    base_url = base_url.rstrip("/")
    images, pages = directory / "images", directory / "designs"
    images.mkdir(parents=True, exist_ok=True)
    pages.mkdir(parents=True, exist_ok=True)
    lines, rows = [], []
    for i in range(count):
        motif = MOTIFS[i % len(MOTIFS)]
        style = STYLES[(i // len(MOTIFS)) % len(STYLES)]
        variant = i // (len(MOTIFS) * len(STYLES))
        design = render(motif, style, seed + variant)
        title = f"{style.name.replace('-', ' ').capitalize()} {motif.name} tattoo"
        shots = [(f"{style.name}-{motif.name}-{variant}", design, title)]
        shots += [(f"{style.name}-{motif.name}-{variant}-photo{k}",
                   photograph(design, f"{seed}:{i}:{k}"), f"{title} (photo)") for k in range(1, photos + 1)]
        for n, (slug, picture, caption) in enumerate(shots):
            picture.save(images / f"{slug}.png", optimize=False)
            (pages / f"{slug}.html").write_text(
                f"<!doctype html><title>{html.escape(caption)}</title>"
                f'<h1>{html.escape(caption)}</h1><img src="../images/{slug}.png" alt="">\n',
                encoding="utf-8",
            )
            entry = {
                "url": f"{base_url}/images/{slug}.png",
                "source_url": f"{base_url}/designs/{slug}.html",
                # Each motif on every platform; a design's photos on other platforms than it.
                "platform": PLATFORMS[(i + i // len(MOTIFS) + n) % len(PLATFORMS)],
                "title": caption,
                "tags": [motif.name, style.name, *motif.tags, "tattoo", *(["photo"] if n else [])],
            }
            lines.append(json.dumps(entry))
            rows.append(f'<a href="designs/{slug}.html"><img src="images/{slug}.png" width="128" '
                        f'alt="{html.escape(caption)}"></a>')
    (directory / "index.html").write_text(
        "<!doctype html><title>Demo tattoo catalog</title>\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    manifest = directory / MANIFEST_NAME
    # Written last and in one go, so a running scraper never reloads a half-written file.
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return manifest


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("%s " + format, self.address_string(), *args)


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for ``directory``; port 0 picks a free one."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    return ThreadingHTTPServer((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scraper_service.demo_catalog",
        description="Draw a synthetic tattoo catalog, write its manifest and serve it over HTTP on loopback.",
    )
    parser.add_argument("--dir", type=Path, default=Path("var/demo"), help="output folder (default: var/demo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to serve on; 0 picks a free one (default: 8765)")
    parser.add_argument("--count", type=int, default=32, help="number of designs (default: 32, at most 128)")
    parser.add_argument("--seed", type=int, default=0, help="drawing seed (default: 0)")
    parser.add_argument("--photos", type=int, default=0,
                        help="photographed near-duplicates of each design, 0 to 8 (default: 0; make run draws 2)")
    parser.add_argument("--write-only", action="store_true", help="write images and manifest, then exit")
    parser.add_argument("--base-url", help="URL prefix for the manifest (default: http://HOST:PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    server = None
    port = args.port
    if not args.write_only:
        # Bind before writing, so --port 0 still produces a manifest with the real port.
        server = make_server(args.dir, args.host, args.port)
        port = server.server_address[1]
    base_url = args.base_url or f"http://{args.host}:{port}"
    try:
        if not 0 <= args.photos <= 8:
            raise ValueError(f"--photos must be between 0 and 8, got {args.photos}")
        manifest = write_catalog(args.dir, base_url, count=args.count, seed=args.seed, photos=args.photos)
    except ValueError as exc:
        parser.error(str(exc))
    logger.info("wrote %d designs (%d photos of each) and %s", args.count, args.photos, manifest)
    logger.info("scraper: SCRAPER_ENGINES=catalog SCRAPER_CATALOG=%s python -m scraper_service", manifest)
    if server is None:
        return 0
    logger.info("serving %s on %s (Ctrl-C to stop)", args.dir, base_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

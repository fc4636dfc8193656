"""The IDX format (MNIST, Fashion-MNIST), gzip-compressed or not, as a benchmark.

IDX: a big-endian header (two zero bytes, a type code, the number of dimensions, then
each dimension as a 32-bit count) and the values row-major. Images are
`*-images-idx3-ubyte` (N x rows x cols, unsigned bytes), labels the matching
`*-labels-idx1-ubyte` (N). Debian's `dataset-fashion-mnist` installs them gzipped under
/usr/share/datasets/fashion-mnist/.

As a benchmark: class retrieval, every image a query against all the others (itself
ignored), same label a hit, as Stanford Online Products is read. IDX holds pixels, not
files, and the embedding machinery sends files, so each image is written once as a PNG
(lossless) under a scratch folder named by the file's digest and the subset.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

# Type codes of the IDX header and the numpy type each stores (big-endian where it matters).
_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxError(ValueError):
    """The file is not IDX; the message says how."""


def read_array(path: Path) -> np.ndarray:
    """An IDX file (plain, or gzip by its magic bytes) as a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: a broken gzip stream ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _TYPES:
        raise IdxError(f"{path} is not an IDX file (it must start with two zero bytes and a known type code)")
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IdxError(f"{path}: the header announces {ndim} dimensions but the file is {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(f"{path}: shape {shape} needs {expected} bytes of values, the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def labels_path(images: Path) -> Path:
    """`t10k-images-idx3-ubyte.gz` -> `t10k-labels-idx1-ubyte.gz` (the published naming)."""
    name = images.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    if name == images.name:
        raise IdxError(f"{images}: cannot tell its labels file (expected a name with 'images-idx3')")
    return images.with_name(name)


def find_images(path: Path) -> Path:
    """The test images file itself, or the folder holding it (t10k first)."""
    if path.is_file():
        return path
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
                 "train-images-idx3-ubyte"):
        if (path / name).is_file():
            return path / name
    raise IdxError(f"{path} is not an IDX images file nor a folder holding t10k-images-idx3-ubyte[.gz]")


def write_pngs(images_file: Path, limit: int | None, scratch: Path) -> tuple[list[Path], list[int]]:
    """The first `limit` images (all when None) as PNG files, and their labels."""
    from PIL import Image

    images = read_array(images_file)
    labels = read_array(labels_path(images_file))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxError(f"{images_file}: images {images.shape} and labels {labels.shape} do not pair up")
    count = len(images) if limit is None else min(limit, len(images))
    digest = hashlib.sha256(images_file.read_bytes()).hexdigest()[:16]
    folder = scratch / f"{images_file.name.split('.')[0]}-{digest}-first{count}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:06d}-{int(labels[index])}.png"
        if not path.exists():
            Image.fromarray(np.ascontiguousarray(images[index]).astype(np.uint8), "L").save(path, format="PNG")
        paths.append(path)
    return paths, [int(label) for label in labels[:count]]


def class_retrieval(paths: list[Path], labels: list[int]) -> tuple[list[Path], list[tuple[int, frozenset[int]]]]:
    """Per image: (its index, the indices of the other images of its label)."""
    by_label: dict[int, set[int]] = defaultdict(set)
    for index, label in enumerate(labels):
        by_label[label].add(index)
    return paths, [(index, frozenset(by_label[label] - {index})) for index, label in enumerate(labels)]

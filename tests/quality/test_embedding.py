"""What the harness sends for an image, and the vector cache on disk."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from bench.quality.embedding import ModelIdentity, VectorCache, image_key
from bench.quality.layouts import ImageRef
from tests.quality.files import image


def test_revisited_queries_are_cropped_to_their_box(tmp_path: Path) -> None:
    path = image(tmp_path / "q.jpg", 0, (64, 48))
    whole_key, whole = image_key(ImageRef(path))
    assert (whole_key, whole) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.read_bytes())
    crop_key, crop = image_key(ImageRef(path, (4.0, 2.0, 40.0, 30.0)))
    with Image.open(io.BytesIO(crop)) as sent:
        assert (sent.format, sent.size) == ("PNG", (36, 28))
    assert crop_key != whole_key
    assert image_key(ImageRef(path, (4.0, 2.0, 40.0, 31.0)))[0] != crop_key  # another box, another entry


def test_cache_round_trip_is_keyed_by_fingerprint(tmp_path: Path) -> None:
    identity = ModelIdentity("clip", 3, "WEIGHTS_SOURCE_RANDOM", "onnx", "fp32", "cpu", "ViT", "seed0", "server")
    cache = VectorCache(tmp_path, identity)
    cache.vectors["ab" * 32] = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    cache.save()
    assert VectorCache(tmp_path, identity).vectors["ab" * 32].tolist() == [np.float32(0.6), np.float32(0.8), 0.0]
    other = ModelIdentity("clip", 3, "WEIGHTS_SOURCE_RANDOM", "onnx", "fp32", "cpu", "ViT", "seed1", "server")
    assert VectorCache(tmp_path, other).vectors == {}

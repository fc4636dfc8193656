"""Compact patch tokens: names, bytes per point, and what stage two reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_gateway.gallery import tokens
from search_gateway.gallery import writer as writer_module
from search_gateway.gallery.base import GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.factory import open_store
from search_gateway.gallery.link import GalleryLink
from search_gateway.gallery.writer import GalleryWriter, Sightings
from search_gateway.metrics import Metrics
from search_gateway.search import rerank


def _tokens(seed: int, grid: tuple[int, int] = (13, 13), dim: int = 64) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal((grid[0] * grid[1], dim)).astype(np.float32)
    return values / np.linalg.norm(values, axis=1, keepdims=True)


@pytest.mark.parametrize(("name", "count", "size"), [
    ("full", 169, 169 * 512 * 4), ("fp16", 169, 169 * 512 * 2), ("int8", 169, 169 * 512),
    ("binary", 169, 169 * 64), ("pool2", 49, 49 * 512 * 4), ("pool2-int8", 49, 49 * 512),
    ("pool3-binary", 25, 25 * 64), ("top32-int8", 32, 32 * 512),
])
def test_bytes_per_point_are_what_encode_writes(name: str, count: int, size: int) -> None:
    compaction = tokens.parse(name)
    assert compaction.token_count((13, 13)) == count
    assert compaction.bytes_per_point((13, 13), 512) == size
    data = tokens.encode(_tokens(1, dim=512), (13, 13), compaction)
    assert len(data) == size
    assert tokens.decode(data, 512, compaction).shape == (count, 512)


def test_bad_names_say_what_is_valid() -> None:
    for name in ("pool1", "top0", "full-int4", "", "pool2-"):
        with pytest.raises(tokens.TokenCompactionError, match="pool2-int8"):
            tokens.parse(name)


def test_int8_and_fp16_keep_the_cosines() -> None:
    query, candidate = _tokens(1), _tokens(2)
    exact = rerank.local_scores(query, [candidate], "maxsim")
    for name in ("fp16", "int8"):
        kept = tokens.compact(candidate, (13, 13), tokens.parse(name))
        assert rerank.local_scores(query, [kept], "maxsim") == pytest.approx(exact, abs=0.01)


def test_pooling_averages_blocks_and_pools_the_ragged_edge() -> None:
    grid = np.arange(9, dtype=np.float32).reshape(9, 1)  # a 3x3 grid of one-dimensional tokens
    pooled = tokens.select(grid, (3, 3), "pool2")
    assert pooled.ravel().tolist() == [2.0, 3.5, 6.5, 8.0]  # (0,1,3,4), (2,5), (6,7), (8)


def test_top_keeps_the_tokens_least_like_the_image() -> None:
    background = np.tile(np.eye(4, dtype=np.float32)[0], (8, 1))
    background[5] = np.eye(4, dtype=np.float32)[2]  # one distinctive patch
    kept = tokens.select(background, (2, 4), "top1")
    assert kept.tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_binary_decodes_to_signs() -> None:
    values = np.array([[0.5, -0.2, 0.0, 3.0, -1.0, 1.0, -1.0, 1.0, 2.0]], dtype=np.float32)
    decoded = tokens.compact(values, (1, 1), tokens.parse("binary"))
    assert decoded.tolist() == [[1, -1, -1, 1, -1, 1, -1, 1, 1]]


def test_tokens_that_do_not_fill_the_grid_are_refused() -> None:
    with pytest.raises(tokens.TokenCompactionError, match="13x13"):
        tokens.encode(_tokens(1, grid=(12, 12)), (13, 13), tokens.parse("full"))


async def test_the_writer_holds_at_most_max_image_bytes_of_images_waiting_for_tokens(tmp_path: Path) -> None:
    # A real writer over a real (embedded) store, not started: what is queued is what it holds.
    async def opener() -> GalleryStore:
        return await open_store(path=tmp_path / "gallery")

    writer = GalleryWriter(GalleryLink(opener, str(tmp_path), retry_s=1.0), Metrics(), max_pending=100, retry_s=0.1)
    space = VectorSpace("squeezenet", "sha256:x", 4)
    big = b"x" * (writer_module.MAX_IMAGE_BYTES // 2 + 1)

    def sighting(n: int) -> Sightings:
        point = GalleryPoint(content_hash=f"{n:064d}", vector=(1.0, 0.0, 0.0, 0.0))
        return Sightings(space, (point,), {point.content_hash: big})

    assert writer.submit(sighting(1)) and writer.pending_image_bytes == len(big)
    assert writer.submit(sighting(2)) and writer.pending_image_bytes == len(big)  # queued without its image
    assert writer.pending == 2
    queued = [writer._queue.get_nowait() for _ in range(2)]
    assert [len(s.images) for s in queued] == [1, 0]

"""The IDX layout (MNIST, Fashion-MNIST): small files written here, plain and gzipped."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.quality import layouts
from bench.quality.idx import read_array
from bench.quality.layouts import LayoutError


def _idx(values: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written from the format's description."""
    header = struct.pack(">BBBB", 0, 0, 0x08, values.ndim) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(np.uint8).tobytes()


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, gzipped: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    pack = gzip.compress if gzipped else (lambda data: data)
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(pack(_idx(images)))
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(pack(_idx(labels)))
    return folder


IMAGES = np.arange(6 * 4 * 5, dtype=np.uint8).reshape(6, 4, 5) * 2
LABELS = np.array([3, 1, 3, 0, 1, 3], dtype=np.uint8)


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_read_as_class_retrieval(tmp_path: Path, gzipped: bool) -> None:
    folder = _write(tmp_path / "fashion", IMAGES, LABELS, gzipped)
    np.testing.assert_array_equal(read_array(next(folder.glob("t10k-images*"))), IMAGES)
    (benchmark,) = layouts.read("idx", folder, scratch=tmp_path / "png")
    assert len(benchmark.gallery) == len(benchmark.queries) == 6
    # Every image a query; its hits the other images of its label; itself ignored.
    assert benchmark.queries[0].relevant == {2, 5} and benchmark.queries[0].ignore == {0}
    assert benchmark.queries[3].relevant == frozenset() and benchmark.queries[3].label == "0"
    # The PNGs hold exactly the pixels of the file.
    with Image.open(benchmark.gallery[4].path) as image:
        np.testing.assert_array_equal(np.asarray(image), IMAGES[4])


def test_a_subset_takes_the_first_images(tmp_path: Path) -> None:
    folder = _write(tmp_path / "fashion", IMAGES, LABELS, gzipped=True)
    (benchmark,) = layouts.read("idx", folder / "t10k-images-idx3-ubyte.gz", limit=3, scratch=tmp_path / "png")
    assert len(benchmark.gallery) == 3
    assert [q.relevant for q in benchmark.queries] == [{2}, set(), {0}]


def test_a_file_that_is_not_idx_is_refused_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(LABELS))
    with pytest.raises(LayoutError, match="is not an IDX file"):
        layouts.read("idx", folder, scratch=tmp_path / "png")


def test_a_truncated_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    folder = _write(tmp_path / "fashion", IMAGES, LABELS, gzipped=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(LayoutError, match=r"shape \(6, 4, 5\) needs 120 bytes of values, the file has 113"):
        layouts.read("idx", folder, scratch=tmp_path / "png")

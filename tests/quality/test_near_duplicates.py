"""The near-duplicate generator: repeatable to the byte, and readable as a folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.quality.layouts import read_folder
from bench.quality.near_duplicates import VIEWS, Sizes, generate

TINY = Sizes(sources=3, views=3, queries_per_source=1, distractors=2)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    generate(tmp_path / "a", TINY, seed=7)
    generate(tmp_path / "b", TINY, seed=7)
    generate(tmp_path / "c", TINY, seed=8)
    first, again, other = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert first == again
    images = {name: data for name, data in first.items() if name.endswith(".jpg")}
    assert len(images) == 3 * (1 + 3) + 2
    assert len(set(images.values())) == len(images)  # no two files alike
    assert not set(images.values()) & {data for name, data in other.items() if name.endswith(".jpg")}


def test_layout_and_manifest(tmp_path: Path) -> None:
    manifest = json.loads(generate(tmp_path, TINY, seed=0).read_text())
    benchmark = read_folder(tmp_path)
    # 3 queries (one view per source); gallery = 3 sources x (original + 2 views) + 2 distractors.
    assert (len(benchmark.queries), len(benchmark.gallery)) == (3, 11)
    for query in benchmark.queries:
        hits = [benchmark.gallery[i].path.name for i in query.relevant]
        assert sorted(hits)[0] == f"{query.label}-original.jpg" and len(hits) == 3
    views = {entry["view"] for entry in manifest["files"]}
    assert views <= {"original", *VIEWS} and len(views) > 2
    entry = manifest["files"][1]
    assert set(entry) == {"path", "sha256", "split", "identity", "view", "params"}
    with Image.open(tmp_path / entry["path"]) as picture:
        assert picture.size == (256, 256)


def test_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("someone's file")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(tmp_path, TINY)

"""Each layout reader on tiny files written as the projects publish them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.quality.evaluate import evaluate
from bench.quality.layouts import LayoutError, read_folder, read_inshop, read_revisited, read_sop
from tests.quality.files import ROXFORD_GND, ROXFORD_IMLIST, ROXFORD_QIMLIST, image, revisited


def _inshop(root: Path, listing: str) -> Path:
    for seed, name in enumerate(["img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "img/WOMEN/Dresses/id_00000002/02_2_side.jpg",
                                 "img/MEN/Denim/id_00000080/01_1_front.jpg", "img/MEN/Denim/id_00000080/01_2_side.jpg",
                                 "img/MEN/Denim/id_00000099/01_1_front.jpg"]):
        image(root / "Img" / name, seed)
    (root / "Eval").mkdir(parents=True)
    path = root / "Eval" / "list_eval_partition.txt"
    path.write_text(listing)
    return path


INSHOP = """5
image_name item_id evaluation_status
img/WOMEN/Dresses/id_00000002/02_1_front.jpg          id_00000002 query
img/WOMEN/Dresses/id_00000002/02_2_side.jpg           id_00000002 gallery
img/MEN/Denim/id_00000080/01_1_front.jpg              id_00000080 gallery
img/MEN/Denim/id_00000080/01_2_side.jpg               id_00000080 query
img/MEN/Denim/id_00000099/01_1_front.jpg              id_00000099 train
"""


def test_inshop_queries_against_gallery_by_item(tmp_path: Path) -> None:
    benchmark = read_inshop(_inshop(tmp_path, INSHOP).parent.parent)  # the dataset folder; the file is under Eval/
    assert [ref.path.name for ref in benchmark.gallery] == ["02_2_side.jpg", "01_1_front.jpg"]
    assert benchmark.gallery[0].path == tmp_path / "Img/img/WOMEN/Dresses/id_00000002/02_2_side.jpg"
    assert [(q.image.path.name, q.relevant, q.ignore) for q in benchmark.queries] == [
        ("02_1_front.jpg", frozenset({0}), frozenset()),
        ("01_2_side.jpg", frozenset({1}), frozenset()),
    ]  # the train row is in neither


@pytest.mark.parametrize(
    ("listing", "says"),
    [
        (INSHOP.replace("5\n", "6\n", 1), "announces 6 rows, the file has 5"),
        (INSHOP.replace("image_name item_id", "image item_id"), "header"),
        (INSHOP.replace("id_00000002 query", "id_00000002 test"), "evaluation_status 'test'"),
    ],
)
def test_inshop_malformed_list_is_named(tmp_path: Path, listing: str, says: str) -> None:
    with pytest.raises(LayoutError, match=says):
        read_inshop(_inshop(tmp_path, listing))


def test_sop_every_image_queries_all_others(tmp_path: Path) -> None:
    rows = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
            (3, 7, 2, "cabinet_final/222_0.JPG"), (4, 7, 2, "cabinet_final/222_1.JPG"), (5, 7, 2, "cabinet_final/222_2.JPG")]
    for seed, (*_, path) in enumerate(rows):
        image(tmp_path / path, seed)
    (tmp_path / "Ebay_test.txt").write_text(
        "image_id class_id super_class_id path\n" + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows)
    )
    benchmark = read_sop(tmp_path)
    assert len(benchmark.gallery) == 5 and len(benchmark.queries) == 5
    assert benchmark.queries[0].image == benchmark.gallery[0]
    assert [(sorted(q.relevant), sorted(q.ignore)) for q in benchmark.queries] == [
        ([1], [0]), ([0], [1]), ([3, 4], [2]), ([2, 4], [3]), ([2, 3], [4]),
    ]


def test_sop_missing_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n1 1 1 bicycle_final/gone.JPG\n")
    with pytest.raises(LayoutError, match="1 image\\(s\\) listed there do not exist, e.g. .*gone.JPG"):
        read_sop(tmp_path)


def test_revisited_medium_and_hard_protocols(tmp_path: Path) -> None:
    path = revisited(tmp_path, ROXFORD_GND, ROXFORD_IMLIST, ROXFORD_QIMLIST)
    medium, hard = read_revisited(path, "medium"), read_revisited(tmp_path, "hard")
    assert medium.name == "roxford5k-medium" and hard.name == "roxford5k-hard"
    assert len(medium.gallery) == 5 and medium.gallery[2].path == tmp_path / "jpg/radcliffe_000003.jpg"
    query = medium.queries[0]
    assert query.image.path == tmp_path / "jpg/all_souls_000013.jpg" and query.image.box == (4.0, 2.0, 40.0, 30.0)
    assert (query.relevant, query.ignore) == ({1, 3}, {0})  # easy+hard; junk ignored
    assert (hard.queries[0].relevant, hard.queries[0].ignore) == ({3}, {0, 1})  # hard; easy+junk ignored


def test_revisited_figures_through_ranking(tmp_path: Path) -> None:
    """Known vectors: database images at 10, 20, 30, 40 and 90 degrees from the query rank 0, 1, 2, 3, 4."""
    revisited(tmp_path, ROXFORD_GND, ROXFORD_IMLIST, ROXFORD_QIMLIST)
    angles = np.radians([10, 20, 30, 40, 90])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    query = np.array([[1.0, 0.0]])
    medium = evaluate(read_revisited(tmp_path, "medium"), gallery, query, (1, 5))
    # Medium: junk 0 out -> order 1, 2, 3, 4; hits {1, 3} at ranks 0 and 2: AP 19/24, mAP@R 1/2, R@1 1.
    assert medium["map"] == pytest.approx(19 / 24)
    assert medium["map@r"] == pytest.approx(0.5)
    assert medium["recall@1"] == 1.0
    hard = evaluate(read_revisited(tmp_path, "hard"), gallery, query, (1, 5))
    # Hard: 0 and 1 out -> order 2, 3, 4; hit {3} at rank 1: AP (0 + 1/2)/2 = 1/4; mAP@R (R = 1) 0; R@1 0, R@5 1.
    assert hard["map"] == pytest.approx(0.25)
    assert hard["map@r"] == 0.0
    assert (hard["recall@1"], hard["recall@5"]) == (0.0, 1.0)
    assert (hard["queries"], hard["gallery"]) == (1, 5)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"hard": [9]}, "index outside imlist"),
        ({"bbx": [40.0, 2.0, 4.0, 30.0]}, "left, top, right, bottom"),
        ({"easy": "x"}, "list of image indices"),
    ],
)
def test_revisited_bad_ground_truth_is_named(tmp_path: Path, change: dict[str, object], says: str) -> None:
    revisited(tmp_path, [{**ROXFORD_GND[0], **change}], ROXFORD_IMLIST, ROXFORD_QIMLIST)
    with pytest.raises(LayoutError, match=says):
        read_revisited(tmp_path, "medium")


def test_folder_leave_one_out_with_distractors(tmp_path: Path) -> None:
    for seed, name in enumerate(["rose/a.jpg", "rose/b.png", "wolf/a.jpg", "_distractors/x.jpg"]):
        image(tmp_path / name, seed)
    (tmp_path / "notes.txt").write_text("not an image: skipped")
    benchmark = read_folder(tmp_path)
    assert [ref.path.relative_to(tmp_path).as_posix() for ref in benchmark.gallery] == [
        "_distractors/x.jpg", "rose/a.jpg", "rose/b.png", "wolf/a.jpg"]
    # Distractor never a query; wolf/a has no other wolf: a query without hits.
    assert [(q.label, sorted(q.relevant), sorted(q.ignore)) for q in benchmark.queries] == [
        ("rose", [2], [1]), ("rose", [1], [2]), ("wolf", [], [3])]


def test_folder_queries_against_gallery(tmp_path: Path) -> None:
    for seed, name in enumerate(["queries/rose/q.jpg", "gallery/rose/g1.jpg", "gallery/rose/g2.jpg",
                                 "gallery/wolf/g.jpg", "gallery/_distractors/d.jpg"]):
        image(tmp_path / name, seed)
    benchmark = read_folder(tmp_path)
    assert len(benchmark.gallery) == 4
    assert [(q.label, sorted(q.relevant), q.ignore) for q in benchmark.queries] == [("rose", [1, 2], frozenset())]


def test_folder_loose_images_are_refused(tmp_path: Path) -> None:
    image(tmp_path / "loose.jpg", 0)
    with pytest.raises(LayoutError, match="one folder per identity"):
        read_folder(tmp_path)

"""Readers of the published benchmark layouts, each giving one typed `Benchmark`.

A benchmark is a gallery (images, by index), queries (an image each), and per query
the gallery indices that count as hits (`relevant`) and those left out of its ranking
as if absent (`ignore`: the query itself where queries come from the gallery, the
Revisited Oxford/Paris junk). Every reader checks the file against its published
format and that every image exists, and says what is wrong in a sentence
(`LayoutError`) rather than failing later mid-run.

Layouts, as their projects publish them:

- DeepFashion In-Shop: `list_eval_partition.txt` (line 1 the row count, line 2 the
  header `image_name item_id evaluation_status`, then rows with status train, query
  or gallery); image names are relative to `Img/`. Query vs gallery, same item_id
  is a hit.
- Stanford Online Products: `Ebay_test.txt` (header `image_id class_id
  super_class_id path`; paths relative to the file's folder). Every image is a query
  against all the others; same class_id is a hit; the query itself is ignored.
- Revisited Oxford/Paris: `gnd_roxford5k.pkl` / `gnd_rparis6k.pkl` (a dict with
  `imlist`, `qimlist`, `gnd`: per query `bbx`, `easy`, `hard`, `junk` indices into
  `imlist`), images in `jpg/<name>.jpg`. Queries are cropped to `bbx`. Medium protocol:
  hits easy+hard, junk ignored; hard protocol: hits hard, easy+junk ignored.
- IDX (MNIST, Fashion-MNIST): `*-images-idx3-ubyte[.gz]` with its
  `*-labels-idx1-ubyte[.gz]` (`idx`): every image a query against the others, same
  label a hit, itself ignored; optionally only the first N images.
- Folder per identity: `<root>/<identity>/<image>`, every image a query against the
  rest (itself ignored); or `<root>/queries/<identity>/...` with
  `<root>/gallery/<identity>/...`, queries against the gallery. Folders whose name
  starts with `_` (e.g. `_distractors`) hold gallery images of no identity: never a
  query, never a hit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality import idx
from bench.quality.safe_pickle import load_restricted

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
PROTOCOLS = ("medium", "hard")


class LayoutError(ValueError):
    """The files do not follow the layout they were read as; the message says how."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    path: Path
    # (left, top, right, bottom) in pixels, cropped before embedding (Revisited queries).
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class Query:
    image: ImageRef
    relevant: frozenset[int]  # gallery indices that are hits
    ignore: frozenset[int]  # gallery indices removed from this query's ranking
    label: str  # item, class or identity, for reports


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    root: Path
    gallery: tuple[ImageRef, ...]
    queries: tuple[Query, ...]

    def __post_init__(self) -> None:
        size = len(self.gallery)
        for number, query in enumerate(self.queries):
            if any(not 0 <= i < size for i in query.relevant | query.ignore):
                raise LayoutError(f"{self.name}: query {number} names a gallery index outside 0..{size - 1}")
            if query.relevant & query.ignore:
                raise LayoutError(f"{self.name}: query {number} has gallery images both relevant and ignored")


def read_inshop(path: Path) -> Benchmark:
    """DeepFashion In-Shop from `list_eval_partition.txt` or the folder holding it (or `Eval/`)."""
    listing = _find_file(path, ("list_eval_partition.txt", "Eval/list_eval_partition.txt"))
    rows = _table(listing, ("image_name", "item_id", "evaluation_status"), counted=True)
    statuses = {"train", "query", "gallery"}
    for line, (_, _, status) in rows:
        if status not in statuses:
            raise LayoutError(f"{listing}:{line}: evaluation_status {status!r} is not one of train, query, gallery")
    names = [name for _, (name, _, status) in rows if status != "train"]
    base = _image_base(listing, names[0] if names else "", (listing.parent, listing.parent.parent / "Img",
                                                            listing.parent / "Img", listing.parent.parent))
    gallery_rows = [(name, item) for _, (name, item, status) in rows if status == "gallery"]
    gallery = tuple(ImageRef(base / name) for name, _ in gallery_rows)
    by_item: dict[str, set[int]] = defaultdict(set)
    for index, (_, item) in enumerate(gallery_rows):
        by_item[item].add(index)
    queries = tuple(
        Query(ImageRef(base / name), frozenset(by_item.get(item, ())), frozenset(), item)
        for _, (name, item, status) in rows
        if status == "query"
    )
    _check_exist(listing, [*gallery, *(q.image for q in queries)])
    return Benchmark("inshop", listing.parent, gallery, queries)


def read_sop(path: Path) -> Benchmark:
    """Stanford Online Products' test split from `Ebay_test.txt` or its folder."""
    listing = _find_file(path, ("Ebay_test.txt",))
    rows = _table(listing, ("image_id", "class_id", "super_class_id", "path"), counted=False)
    gallery = tuple(ImageRef(listing.parent / relative) for _, (_, _, _, relative) in rows)
    by_class: dict[str, set[int]] = defaultdict(set)
    for index, (_, (_, class_id, _, _)) in enumerate(rows):
        by_class[class_id].add(index)
    queries = tuple(
        Query(gallery[i], frozenset(by_class[class_id] - {i}), frozenset({i}), class_id)
        for i, (_, (_, class_id, _, _)) in enumerate(rows)
    )
    _check_exist(listing, gallery)
    return Benchmark("sop", listing.parent, gallery, queries)


def read_revisited(path: Path, protocol: str) -> Benchmark:
    """Revisited Oxford or Paris, one protocol (`medium` or `hard`), from `gnd_*.pkl` or its folder."""
    if protocol not in PROTOCOLS:
        raise LayoutError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    gnd_file = path
    if path.is_dir():
        found = sorted(path.glob("gnd_*.pkl"))
        if len(found) != 1:
            raise LayoutError(f"{path} must hold exactly one gnd_<dataset>.pkl, found {len(found)}")
        gnd_file = found[0]
    if not gnd_file.is_file():
        raise LayoutError(f"{gnd_file} does not exist")
    match = re.fullmatch(r"gnd_(.+)\.pkl", gnd_file.name)
    dataset = match.group(1) if match else gnd_file.stem
    imlist, qimlist, gnd = _ground_truth(gnd_file)
    images = gnd_file.parent / "jpg"
    gallery = tuple(ImageRef(images / f"{name}.jpg") for name in imlist)
    queries = []
    for name, truth in zip(qimlist, gnd, strict=True):
        easy, hard, junk = (frozenset(truth[key]) for key in ("easy", "hard", "junk"))
        if protocol == "medium":
            relevant, ignore = easy | hard, junk
        else:
            relevant, ignore = hard, easy | junk
        box = truth["bbx"]
        queries.append(Query(ImageRef(images / f"{name}.jpg", box), relevant - ignore, ignore, name))
    _check_exist(gnd_file, [*gallery, *(q.image for q in queries)])
    return Benchmark(f"{dataset}-{protocol}", gnd_file.parent, gallery, tuple(queries))


def read_folder(path: Path) -> Benchmark:
    """Folder per identity: leave-one-out, or `queries/` against `gallery/`."""
    if not path.is_dir():
        raise LayoutError(f"{path} is not a folder")
    if (path / "queries").is_dir() or (path / "gallery").is_dir():
        if not ((path / "queries").is_dir() and (path / "gallery").is_dir()):
            raise LayoutError(f"{path} must hold both queries/ and gallery/, or neither")
        query_items = _identity_images(path / "queries")
        gallery_items = _identity_images(path / "gallery")
        gallery = tuple(ImageRef(image) for image, _ in gallery_items)
        by_identity = _indices_by_identity(gallery_items)
        queries = tuple(
            Query(ImageRef(image), frozenset(by_identity.get(identity, ())), frozenset(), identity)
            for image, identity in query_items
            if identity is not None
        )
    else:
        items = _identity_images(path)
        gallery = tuple(ImageRef(image) for image, _ in items)
        by_identity = _indices_by_identity(items)
        queries = tuple(
            Query(gallery[i], frozenset(by_identity[identity] - {i}), frozenset({i}), identity)
            for i, (_, identity) in enumerate(items)
            if identity is not None
        )
    if not gallery:
        raise LayoutError(f"{path} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return Benchmark("folder", path, gallery, queries)


def read_idx(path: Path, limit: int | None = None, scratch: Path = Path("var/quality/idx")) -> Benchmark:
    """An IDX images file (or its folder) as class retrieval over its first `limit` images."""
    try:
        images_file = idx.find_images(path)
        paths, labels = idx.write_pngs(images_file, limit, scratch)
    except idx.IdxError as exc:
        raise LayoutError(str(exc)) from exc
    gallery = tuple(ImageRef(p) for p in paths)
    _, hits = idx.class_retrieval(paths, labels)
    queries = tuple(Query(gallery[i], relevant, frozenset({i}), str(labels[i])) for i, relevant in hits)
    return Benchmark("idx", images_file.parent, gallery, queries)


LAYOUTS = ("inshop", "sop", "revisited", "folder", "idx")


def read(
    layout: str, path: Path, protocols: Sequence[str] = PROTOCOLS, *, limit: int | None = None,
    scratch: Path = Path("var/quality/idx"),
) -> list[Benchmark]:
    """The benchmarks of one layout: one, or one per protocol for Revisited Oxford/Paris.
    `limit` and `scratch` are the IDX layout's: the first images only, and where their PNGs go."""
    if layout == "inshop":
        return [read_inshop(path)]
    if layout == "sop":
        return [read_sop(path)]
    if layout == "revisited":
        return [read_revisited(path, protocol) for protocol in protocols]
    if layout == "folder":
        return [read_folder(path)]
    if layout == "idx":
        return [read_idx(path, limit, scratch)]
    raise LayoutError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")


# -- helpers ---------------------------------------------------------------------


def _find_file(path: Path, names: Sequence[str]) -> Path:
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise LayoutError(f"{path} is not {' or '.join(names)} nor a folder holding it")


def _table(listing: Path, header: tuple[str, ...], *, counted: bool) -> list[tuple[int, tuple[str, ...]]]:
    """Whitespace-separated rows under `header` (and a first line with the row count if `counted`)."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{listing} is not UTF-8 text: {exc}") from exc
    numbered = [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]
    expected_count = None
    if counted:
        if not numbered or len(numbered[0][1]) != 1 or not numbered[0][1][0].isdigit():
            raise LayoutError(f"{listing}: line 1 must be the number of rows")
        expected_count = int(numbered[0][1][0])
        numbered = numbered[1:]
    if not numbered or tuple(numbered[0][1]) != header:
        where = "line 2" if counted else "line 1"
        raise LayoutError(f"{listing}: {where} must be the header {' '.join(header)!r}")
    rows = []
    for n, fields in numbered[1:]:
        if len(fields) != len(header):
            raise LayoutError(f"{listing}:{n}: expected {len(header)} fields ({' '.join(header)}), got {len(fields)}")
        rows.append((n, tuple(fields)))
    if expected_count is not None and expected_count != len(rows):
        raise LayoutError(f"{listing}: line 1 announces {expected_count} rows, the file has {len(rows)}")
    return rows


def _image_base(listing: Path, first: str, candidates: Iterable[Path]) -> Path:
    if not first:
        return listing.parent
    for base in candidates:
        if (base / first).is_file():
            return base
    raise LayoutError(f"{listing}: cannot find its first image {first!r} next to it, in ../Img/ or in Img/")


def _check_exist(source: Path, refs: Sequence[ImageRef]) -> None:
    missing = sorted({str(ref.path) for ref in refs if not ref.path.is_file()})
    if missing:
        raise LayoutError(f"{source}: {len(missing)} image(s) listed there do not exist, e.g. {missing[0]}")


def _identity_images(root: Path) -> list[tuple[Path, str | None]]:
    """(image, identity) pairs in a stable order; identity None for `_` folders."""
    items: list[tuple[Path, str | None]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                raise LayoutError(f"{entry}: images must sit in one folder per identity, not directly in {root}")
            continue
        identity = None if entry.name.startswith("_") else entry.name
        for image in sorted(entry.rglob("*")):
            if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES and not image.name.startswith("."):
                items.append((image, identity))
    return items


def _indices_by_identity(items: Sequence[tuple[Path, str | None]]) -> dict[str, set[int]]:
    by_identity: dict[str, set[int]] = defaultdict(set)
    for index, (_, identity) in enumerate(items):
        if identity is not None:
            by_identity[identity].add(index)
    return by_identity


def _ground_truth(path: Path) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """`imlist`, `qimlist` and `gnd` of a revisitop file, checked and with plain Python values."""
    data = load_restricted(path)
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= data.keys():
        raise LayoutError(f"{path}: expected a dict with imlist, qimlist and gnd")
    imlist, qimlist, gnd = list(data["imlist"]), list(data["qimlist"]), list(data["gnd"])
    if not all(isinstance(name, str) for name in [*imlist, *qimlist]):
        raise LayoutError(f"{path}: imlist and qimlist must hold image names (strings)")
    if len(gnd) != len(qimlist):
        raise LayoutError(f"{path}: gnd has {len(gnd)} entries for {len(qimlist)} queries")
    checked = []
    for number, truth in enumerate(gnd):
        if not isinstance(truth, dict) or not {"bbx", "easy", "hard", "junk"} <= truth.keys():
            raise LayoutError(f"{path}: gnd[{number}] must be a dict with bbx, easy, hard and junk")
        entry: dict[str, Any] = {}
        for key in ("easy", "hard", "junk"):
            try:
                indices = [int(i) for i in list(truth[key])]
            except (TypeError, ValueError) as exc:
                raise LayoutError(f"{path}: gnd[{number}][{key!r}] must be a list of image indices") from exc
            if any(not 0 <= i < len(imlist) for i in indices):
                raise LayoutError(f"{path}: gnd[{number}][{key!r}] has an index outside imlist (0..{len(imlist) - 1})")
            entry[key] = indices
        try:
            box = tuple(float(v) for v in list(truth["bbx"]))
        except (TypeError, ValueError) as exc:
            raise LayoutError(f"{path}: gnd[{number}]['bbx'] must be four numbers") from exc
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise LayoutError(f"{path}: gnd[{number}]['bbx'] must be (left, top, right, bottom), got {box}")
        entry["bbx"] = box
        checked.append(entry)
    return imlist, qimlist, checked

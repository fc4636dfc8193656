"""Our numpy preprocessing against each family's reference pipeline (pitfall: DINOv2's
processor class defaults to CLIP statistics; SigLIP and DINOv3 squash, not crop)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
from transformers import BitImageProcessor, DINOv3ViTImageProcessor, SiglipImageProcessor

from embed_server.models import CARDS
from embed_server.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tests.support.images import noise_image


def _reference(name: str):
    if name == "clip":
        transform = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                              std=open_clip.OPENAI_DATASET_STD)
        return lambda image: transform(image).numpy()
    if name in ("dinov2", "dinov2-reg"):
        processor = BitImageProcessor(
            size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
            do_center_crop=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), do_convert_rgb=True,
        )
    elif name == "squeezenet":
        # keras-squeezenet's recipe, written out: squash to 227 (bilinear: see cards.py),
        # BGR, minus DeepScale's Caffe mean in 0-255 units, no std.
        def caffe(image):  # type: ignore[no-untyped-def]
            rgb = np.asarray(image.convert("RGB").resize((227, 227), 2), np.float32)
            return (rgb[:, :, ::-1] - np.array([104.006, 116.669, 122.679], np.float32)).transpose(2, 0, 1)

        return caffe
    elif name == "dinov3":
        processor = DINOv3ViTImageProcessor()
    else:
        processor = SiglipImageProcessor()
    return lambda image: np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0])


@pytest.mark.parametrize("name", list(CARDS))
@pytest.mark.parametrize("size", [(320, 240), (240, 320), (224, 224), (1000, 333)])
def test_matches_the_reference_pipeline(name: str, size: tuple[int, int]) -> None:
    image = noise_image(3, size)
    ours = CARDS[name].preprocess(image)
    side = CARDS[name].image_size
    assert ours.shape == (3, side, side) and ours.dtype == np.float32
    reference = _reference(name)(image)
    # Same resize (Pillow) and statistics; crop offsets may differ by a pixel between
    # torchvision and transformers, so compare the interior strictly and the rest loosely.
    np.testing.assert_allclose(ours[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2], atol=0.08)
    assert np.mean(np.abs(ours - reference)) < 0.02

"""Per-model image preprocessing in Pillow and numpy.

No torch here: the ONNX Runtime path must run without it. Each model declares how
its pretrained weights expect pixels (resize rule, interpolation, statistics), and
the resulting array is what both runtimes consume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    # "shortest_side_then_crop": resize the short side to `resize_size`, centre-crop
    # `image_size` (CLIP, DINOv2). "squash": resize straight to image_size x image_size
    # (DINOv3, SigLIP), as their processors do.
    resize: Literal["shortest_side_then_crop", "squash"]
    resize_size: int
    interpolation: Literal["bicubic", "bilinear", "nearest"]
    # In the units after `scale`: 0-1 for the ViTs, 0-255 for Caffe-trained weights.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Caffe-trained weights (SqueezeNet) take BGR pixels in 0-255 minus a mean, no std.
    channels: Literal["rgb", "bgr"] = "rgb"
    scale: float = 1.0 / 255.0

    @property
    def draft_size(self) -> int:
        """Smallest side the decoder may shrink to without losing what resize keeps."""
        return self.resize_size

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> float32 array of shape (3, image_size, image_size)."""
        resample = _RESAMPLE[self.interpolation]
        if self.resize == "squash":
            image = image.resize((self.image_size, self.image_size), resample)
        else:
            # Sizes and offsets follow torchvision's Resize and CenterCrop, which the
            # reference pipelines of these weights use: truncate the long side, round
            # the crop offset.
            width, height = image.size
            if width <= height:
                new_w, new_h = self.resize_size, int(self.resize_size * height / width)
            else:
                new_w, new_h = int(self.resize_size * width / height), self.resize_size
            image = image.resize((new_w, new_h), resample)
            left = int(round((new_w - self.image_size) / 2.0))
            top = int(round((new_h - self.image_size) / 2.0))
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        pixels: np.ndarray = np.asarray(image, dtype=np.float32) * np.float32(self.scale)
        if self.channels == "bgr":
            pixels = pixels[:, :, ::-1]
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

"""The five public models: static facts known before anything is built.

Torch-free on purpose: a server whose ONNX exports are cached never imports torch
(about 700 MB of resident memory), and everything it needs to know about a model
before that point lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embed_server.preprocess import HALF, IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess

WeightsKind = Literal["pretrained", "random"]
Architecture = Literal["full", "tiny"]
Tokenizer = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    pretrained_id: str
    patch_size: int
    preprocess: Preprocess
    supports_text: bool
    # Dimensions of the full-size architecture (ListModels reports these before a
    # model is loaded; a loaded model reports its own).
    global_dim: int
    patch_dim: int

    @property
    def grid(self) -> tuple[int, int]:
        side = self.preprocess.image_size // self.patch_size
        return side, side


# DINOv2's reference transform: short side to 256, centre crop 224, bicubic, ImageNet
# statistics. (transformers' BitImageProcessor defaults to CLIP's statistics: we set ours.)
_DINOV2_PREPROCESS = Preprocess(224, "shortest_side_then_crop", 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD)

CARDS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            name="clip",
            architecture="open_clip ViT-B-32",
            pretrained_id="timm/vit_base_patch32_clip_224.openai",
            patch_size=32,
            preprocess=Preprocess(224, "shortest_side_then_crop", 224, "bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
            supports_text=True,
            global_dim=512,
            patch_dim=512,
        ),
        ModelCard("dinov2", "DINOv2 ViT-B/14", "facebook/dinov2-base", 14, _DINOV2_PREPROCESS, False, 768, 768),
        ModelCard(
            "dinov2-reg",
            "DINOv2 ViT-B/14 with 4 registers",
            "facebook/dinov2-with-registers-base",
            14,
            _DINOV2_PREPROCESS,
            False,
            768,
            768,
        ),
        ModelCard(
            "dinov3",
            "DINOv3 ViT-S/16 with 4 registers",
            "facebook/dinov3-vits16-pretrain-lvd1689m",
            16,
            # DINOv3's processor resizes straight to 224x224, bilinear, ImageNet statistics.
            Preprocess(224, "squash", 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
            False,
            384,
            384,
        ),
        ModelCard(
            name="siglip",
            architecture="SigLIP base patch16-224",
            pretrained_id="google/siglip-base-patch16-224",
            patch_size=16,
            preprocess=Preprocess(224, "squash", 224, "bicubic", HALF, HALF),
            supports_text=True,
            global_dim=768,
            patch_dim=768,
        ),
    )
}

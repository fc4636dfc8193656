"""DINO-family ViTs from transformers: DINOv2, DINOv2 with registers, DINOv3.

All three put [CLS, registers..., patches...] in `last_hidden_state` after the final
layer norm. The global vector is the CLS token; patch features are the rest minus
the registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    DINOv3ViTConfig,
    DINOv3ViTModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PretrainedConfig,
    PreTrainedModel,
)

from embed_server.models.base import Architecture, ModelCard, Tokenizer, Towers, l2_normalise
from embed_server.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

# DINOv2's reference transform: short side to 256, centre crop 224, bicubic, ImageNet
# statistics. (transformers' BitImageProcessor defaults to CLIP's statistics: we set ours.)
_DINOV2_PREPROCESS = Preprocess(224, "shortest_side_then_crop", 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
# DINOv3's processor resizes straight to 224x224, bilinear, ImageNet statistics.
_DINOV3_PREPROCESS = Preprocess(224, "squash", 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)

_TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


class DinoImageTower(nn.Module):
    def __init__(self, backbone: PreTrainedModel, prefix_tokens: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.prefix_tokens = prefix_tokens

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(pixel_values=pixels).last_hidden_state
        return l2_normalise(hidden[:, 0]), l2_normalise(hidden[:, self.prefix_tokens :])


@dataclass(frozen=True)
class DinoFamily:
    card: ModelCard
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    full_config: dict[str, Any]
    tiny_config: dict[str, Any]

    def build_random(self, architecture: Architecture) -> Towers:
        overrides = self.full_config if architecture == "full" else self.tiny_config
        return self._towers(self.model_class(self.config_class(**overrides)))

    def load_pretrained(self, folder: Path) -> Towers:
        return self._towers(self.model_class.from_pretrained(str(folder), local_files_only=True))

    def tokenizer(self, folder: Path | None) -> Tokenizer | None:
        return None

    def _towers(self, model: PreTrainedModel) -> Towers:
        prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        return Towers(image=DinoImageTower(model, prefix))


_DINOV2_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": 14,
    # Trained at 518 px: position embeddings are interpolated to the 16x16 grid at 224,
    # as with the real checkpoint.
    "image_size": 518,
    "layerscale_value": 1.0,
}

DINOV2 = DinoFamily(
    card=ModelCard("dinov2", "DINOv2 ViT-B/14", "facebook/dinov2-base", 14, _DINOV2_PREPROCESS, False, 768, 768),
    model_class=Dinov2Model,
    config_class=Dinov2Config,
    full_config=_DINOV2_BASE,
    tiny_config={**_DINOV2_BASE, **_TINY_VIT},
)

DINOV2_REG = DinoFamily(
    card=ModelCard(
        "dinov2-reg",
        "DINOv2 ViT-B/14 with 4 registers",
        "facebook/dinov2-with-registers-base",
        14,
        _DINOV2_PREPROCESS,
        False,
        768,
        768,
    ),
    model_class=Dinov2WithRegistersModel,
    config_class=Dinov2WithRegistersConfig,
    full_config={**_DINOV2_BASE, "num_register_tokens": 4},
    tiny_config={**_DINOV2_BASE, **_TINY_VIT, "num_register_tokens": 4},
)

_DINOV3_SMALL = {
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "patch_size": 16,
    "num_register_tokens": 4,
    "layerscale_value": 1e-5,
}

DINOV3 = DinoFamily(
    card=ModelCard(
        "dinov3",
        "DINOv3 ViT-S/16 with 4 registers",
        "facebook/dinov3-vits16-pretrain-lvd1689m",
        16,
        _DINOV3_PREPROCESS,
        False,
        384,
        384,
    ),
    model_class=DINOv3ViTModel,
    config_class=DINOv3ViTConfig,
    full_config=_DINOV3_SMALL,
    # With the real layerscale (1e-5) random weights map every image to the same vector;
    # 1.0 keeps tiny test models able to tell images apart.
    tiny_config={**_DINOV3_SMALL, **_TINY_VIT, "intermediate_size": 64, "layerscale_value": 1.0},
)

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
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PretrainedConfig,
    PreTrainedModel,
)

from embed_server.models.base import Towers, l2_normalise
from embed_server.models.cards import CARDS, Architecture, ModelCard

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

    def _towers(self, model: PreTrainedModel) -> Towers:
        _bake_position_embeddings(model, self.card.preprocess.image_size)
        prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        return Towers(image=DinoImageTower(model, prefix))


def _bake_position_embeddings(model: PreTrainedModel, image_size: int) -> None:
    """Interpolate DINOv2's position embeddings to the served size once, not per batch.

    The checkpoints hold embeddings for 518 px (a 37x37 grid); every forward pass at
    224 px resamples them to 16x16 with antialiased bicubic interpolation. Inputs here
    are always image_size square, so the result is a constant: computing it once saves
    that work in every pass, and it is what lets the TorchScript exporter handle
    DINOv2 with registers, whose antialiased resampling it cannot express (the dynamo
    exporter could, but ONNX Runtime ran its graph markedly slower). Other sizes still
    take the original path. The values are identical, so parity with the library holds.
    """
    embeddings = getattr(model, "embeddings", None)
    original = getattr(embeddings, "interpolate_pos_encoding", None)
    if embeddings is None or original is None:
        return  # DINOv3: rotary position embeddings, nothing to interpolate
    patches = (image_size // model.config.patch_size) ** 2
    tokens = torch.zeros(1, 1 + patches, model.config.hidden_size)
    with torch.no_grad():
        baked = original(tokens, image_size, image_size).detach().clone()
    # A buffer follows the module to other devices and dtypes (fp16 on GPUs).
    embeddings.register_buffer("baked_position_embeddings", baked, persistent=False)

    def interpolate(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if height == image_size and width == image_size:
            baked_tokens: torch.Tensor = embeddings.baked_position_embeddings
            return baked_tokens
        interpolated: torch.Tensor = original(tokens, height, width)
        return interpolated

    embeddings.interpolate_pos_encoding = interpolate


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
    card=CARDS["dinov2"],
    model_class=Dinov2Model,
    config_class=Dinov2Config,
    full_config=_DINOV2_BASE,
    tiny_config={**_DINOV2_BASE, **_TINY_VIT},
)

DINOV2_REG = DinoFamily(
    card=CARDS["dinov2-reg"],
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
    card=CARDS["dinov3"],
    model_class=DINOv3ViTModel,
    config_class=DINOv3ViTConfig,
    full_config=_DINOV3_SMALL,
    # With the real layerscale (1e-5) random weights map every image to the same vector;
    # 1.0 keeps tiny test models able to tell images apart.
    tiny_config={**_DINOV3_SMALL, **_TINY_VIT, "intermediate_size": 64, "layerscale_value": 1.0},
)

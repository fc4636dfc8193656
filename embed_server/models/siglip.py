"""SigLIP base patch16-224 through transformers: image and text towers."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import SiglipConfig, SiglipModel

from embed_server.models.base import Towers, l2_normalise
from embed_server.models.cards import CARDS, Architecture
from embed_server.models.tokenizers import SIGLIP_TEXT_LENGTH

CARD = CARDS["siglip"]


# The offline vocabulary's special-token ids (see siglip_vocab), used whenever weights
# are random and so come without SigLIP's own tokenizer files.
_OFFLINE_TOKEN_IDS = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": None}
_TINY_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_CONFIG = {
    "vision_config": {**_TINY_TOWER, "image_size": 224, "patch_size": 16},
    "text_config": {
        **_TINY_TOWER,
        "vocab_size": 1000,
        "max_position_embeddings": SIGLIP_TEXT_LENGTH,
        **_OFFLINE_TOKEN_IDS,
    },
}


class SiglipImageTower(nn.Module):
    def __init__(self, model: SiglipModel) -> None:
        super().__init__()
        self.vision = model.vision_model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vision(pixel_values=pixels)
        # pooler_output is the attention-pooling head's output (what get_image_features
        # returns); last_hidden_state is post-layernorm and has no CLS token.
        return l2_normalise(out.pooler_output), l2_normalise(out.last_hidden_state)


class SiglipTextTower(nn.Module):
    def __init__(self, model: SiglipModel) -> None:
        super().__init__()
        self.text = model.text_model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.text(input_ids=token_ids).pooler_output)


def _towers(model: SiglipModel) -> Towers:
    return Towers(image=SiglipImageTower(model), text=SiglipTextTower(model))


class SiglipFamily:
    card = CARD

    def build_random(self, architecture: Architecture) -> Towers:
        if architecture == "tiny":
            return _towers(SiglipModel(SiglipConfig(**TINY_CONFIG)))  # type: ignore[arg-type]  # nested tower dicts, as transformers takes them
        return _towers(SiglipModel(SiglipConfig(text_config=_OFFLINE_TOKEN_IDS)))

    def load_pretrained(self, folder: Path) -> Towers:
        return _towers(SiglipModel.from_pretrained(str(folder), local_files_only=True))

"""OpenAI CLIP ViT-B/32 through open_clip: image and text towers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from embed_server.models.base import Towers, l2_normalise
from embed_server.models.cards import CARDS, Architecture
from embed_server.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

CARD = CARDS["clip"]

# Same classes and patch grid as ViT-B-32, a fraction of the width and depth. The text
# vocabulary stays full size because the bundled tokenizer emits ids up to 49407.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class ClipImageTower(nn.Module):
    def __init__(self, model: open_clip.CLIP) -> None:
        super().__init__()
        self.visual = model.visual
        self.visual.output_tokens = True

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.visual(pixels)
        # Projecting the patch tokens with the same matrix as the pooled token puts
        # patches in the joint image-text space, comparable with the global vector.
        patches = tokens @ self.visual.proj
        return l2_normalise(pooled), l2_normalise(patches)


class ClipTextTower(nn.Module):
    def __init__(self, model: open_clip.CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.model.encode_text(token_ids))


def _towers(model: open_clip.CLIP) -> Towers:
    return Towers(image=ClipImageTower(model), text=ClipTextTower(model))


class ClipFamily:
    card = CARD

    def build_random(self, architecture: Architecture) -> Towers:
        if architecture == "tiny":
            return _towers(open_clip.CLIP(**TINY_CONFIG))
        # The openai weights were trained with QuickGELU; same compute either way.
        return _towers(open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True))

    def load_pretrained(self, folder: Path) -> Towers:
        return _towers(open_clip.create_model(f"local-dir:{folder}", load_weights=True, require_pretrained=True))


def save_in_open_clip_format(model: open_clip.CLIP, config: dict[str, Any], folder: Path) -> None:
    """Write a checkpoint the way open_clip's hub folders are laid out (for tests and
    for converting a local checkpoint)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": preprocess_cfg})
    )
    save_model(model, str(folder / "open_clip_model.safetensors"))

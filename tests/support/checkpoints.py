"""Tiny checkpoints written in each family's real on-disk format, with a reference
function computing what the library's own API says the global image vector is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from transformers import SiglipConfig, SiglipModel, SiglipTokenizer

from embed_server.models.clip import TINY_CONFIG as CLIP_TINY
from embed_server.models.clip import save_in_open_clip_format
from embed_server.models.dino import DINOV2, DINOV2_REG, DINOV3
from embed_server.models.siglip import TINY_CONFIG as SIGLIP_TINY
from embed_server.models.siglip_vocab import offline_tokenizer

Reference = Callable[[torch.Tensor], torch.Tensor]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _pooled(output: object) -> torch.Tensor:
    # transformers 5 returns an output object from get_*_features; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


def write_tiny_checkpoint(name: str, folder: Path, seed: int = 1234) -> tuple[Reference, Reference | None, object]:
    """Save a tiny random model of `name` under folder/name; return reference image and
    text encoders computed with the library's public API, and the tokenizer (or None)."""
    torch.manual_seed(seed)
    target = folder / name
    if name == "clip":
        model = open_clip.CLIP(**CLIP_TINY).eval()
        save_in_open_clip_format(model, CLIP_TINY, target)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
        return (
            lambda pixels: model.encode_image(pixels, normalize=True),
            lambda ids: model.encode_text(ids, normalize=True),
            tokenizer,
        )
    if name == "siglip":
        model = SiglipModel(SiglipConfig(**SIGLIP_TINY)).eval()
        model.save_pretrained(target)
        tokenizer: SiglipTokenizer = offline_tokenizer()
        tokenizer.save_pretrained(target)
        return (
            lambda pixels: _unit(_pooled(model.get_image_features(pixel_values=pixels))),
            lambda ids: _unit(_pooled(model.get_text_features(input_ids=ids))),
            tokenizer,
        )
    family = {"dinov2": DINOV2, "dinov2-reg": DINOV2_REG, "dinov3": DINOV3}[name]
    backbone = family.model_class(family.config_class(**family.tiny_config)).eval()
    backbone.save_pretrained(target)
    return lambda pixels: _unit(backbone(pixel_values=pixels).pooler_output), None, None

"""The model registry: every family by its public name."""

from __future__ import annotations

import os

# Never reach for the network: the server loads weights from local folders only, and a
# lookup of missing files then fails at once instead of after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from embed_server.models.base import ModelCard, ModelFamily, Tokenizer, Towers  # noqa: E402
from embed_server.models.clip import ClipFamily  # noqa: E402
from embed_server.models.dino import DINOV2, DINOV2_REG, DINOV3  # noqa: E402
from embed_server.models.siglip import SiglipFamily  # noqa: E402

FAMILIES: dict[str, ModelFamily] = {
    "clip": ClipFamily(),
    "dinov2": DINOV2,
    "dinov2-reg": DINOV2_REG,
    "dinov3": DINOV3,
    "siglip": SiglipFamily(),
}

__all__ = ["FAMILIES", "ModelCard", "ModelFamily", "Tokenizer", "Towers"]

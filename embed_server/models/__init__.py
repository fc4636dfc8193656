"""Each public name's card, and its family loaded on demand.

Which models exist is decided in `service_common.model_registry`; this maps each to the
code that builds it. Cards and tokenizers are torch-free; a family (the torch code that
builds or loads a model) is imported only when a model must be built, for the torch
runtime or for an ONNX export that is not cached yet.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

# Never reach for the network: the server loads weights from local folders only, and a
# lookup of missing files then fails at once instead of after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from embed_server.models.cards import CARDS, ModelCard, Tokenizer  # noqa: E402

if TYPE_CHECKING:  # base.py imports torch, which this package defers
    from embed_server.models.base import ModelFamily

_FAMILIES = {
    "clip": ("embed_server.models.clip", "ClipFamily"),
    "dinov2": ("embed_server.models.dino", "DINOV2"),
    "dinov2-reg": ("embed_server.models.dino", "DINOV2_REG"),
    "dinov3": ("embed_server.models.dino", "DINOV3"),
    "siglip": ("embed_server.models.siglip", "SiglipFamily"),
    "squeezenet": ("embed_server.models.squeezenet", "SqueezeNetFamily"),
}
# A model added to the registry without a family (or the reverse) fails at import, not
# at its first request.
if set(_FAMILIES) != set(CARDS):
    raise RuntimeError(f"model families {sorted(_FAMILIES)} do not match the registry's models {sorted(CARDS)}")


def family(name: str) -> ModelFamily:
    """The family that builds model `name` (imports torch)."""
    module, attribute = _FAMILIES[name]
    found = getattr(importlib.import_module(module), attribute)
    built: ModelFamily = found() if isinstance(found, type) else found
    return built


__all__ = ["CARDS", "ModelCard", "Tokenizer", "family"]

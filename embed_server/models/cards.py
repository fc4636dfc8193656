"""Each public model's card as the embed server uses it: the registry's facts plus how
the model's pretrained weights expect pixels.

Which models exist, and their sizes, are decided in `service_common.model_registry`;
this module only adds the preprocessing recipe. Torch-free on purpose: a server whose
ONNX exports are cached never imports torch (about 700 MB of resident memory), and
everything it needs to know about a model before that point lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from embed_server.preprocess import HALF, IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess
from service_common import model_registry

# SqueezeNet's Caffe training: BGR pixels in 0-255 minus DeepScale's per-channel mean
# (in B, G, R order: the mean is taken after the channel swap), no division by a std;
# images squashed to 227x227 as keras-squeezenet's loader does.
SQUEEZENET_PREPROCESS = Preprocess(
    227, "squash", 227, "bilinear", (104.006, 116.669, 122.679), (1.0, 1.0, 1.0), channels="bgr", scale=1.0,
)

WeightsKind = Literal["pretrained", "random"]
Architecture = Literal["full", "tiny"]
Tokenizer = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class ModelCard(model_registry.ModelCard):
    preprocess: Preprocess

    @classmethod
    def of(cls, public: model_registry.ModelCard) -> ModelCard:
        facts = {f.name: getattr(public, f.name) for f in fields(public)}
        return cls(**facts, preprocess=_preprocess(public))


def _preprocess(card: model_registry.ModelCard) -> Preprocess:
    """The reference transform of the model's pretrained weights, at the card's input size."""
    side = card.image_size
    match card.name:
        case "clip":
            return Preprocess(side, "shortest_side_then_crop", side, "bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        case "dinov2" | "dinov2-reg":
            # DINOv2's reference transform: short side to 256, centre crop 224, bicubic, ImageNet
            # statistics. (transformers' BitImageProcessor defaults to CLIP's statistics: we set ours.)
            return Preprocess(side, "shortest_side_then_crop", 256, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
        case "dinov3":
            # DINOv3's processor resizes straight to 224x224, bilinear, ImageNet statistics.
            return Preprocess(side, "squash", side, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
        case "siglip":
            return Preprocess(side, "squash", side, "bicubic", HALF, HALF)
        case "squeezenet":
            return SQUEEZENET_PREPROCESS
    raise ValueError(f"no preprocessing recipe for model {card.name!r}")


CARDS: dict[str, ModelCard] = {name: ModelCard.of(model_registry.get_card(name)) for name in model_registry.list_models()}

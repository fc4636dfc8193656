"""The five public models: the one place that says which exist and what each one is.

Public facts only (name, architecture, input size, patch grid, dimensions, text tower):
what a client may know about a model before any server loads it. The embed server adds
how it builds and preprocesses each (`embed_server.models`); the gateway uses this to
check its settings at start and asks the embed server (ListModels) what it serves now.

No third-party imports on purpose: every service image ships this package, and the
gateway image has neither torch nor numpy's image stack to spare.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnknownModelError(ValueError):
    """A model name no card describes; the message lists the names that exist."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    pretrained_id: str
    # Side of the square the model sees, in pixels; patches are `patch_size` square.
    image_size: int
    patch_size: int
    supports_text: bool
    # Dimensions of the full-size architecture (ListModels reports these before a
    # model is loaded; a loaded model reports its own).
    global_dim: int
    patch_dim: int

    @property
    def grid(self) -> tuple[int, int]:
        """Patch tokens per (row, column), registers and class token left out."""
        side = self.image_size // self.patch_size
        return side, side


# In the order every listing uses (errors, ListModels, the page's model picker).
_CARDS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            name="clip", architecture="open_clip ViT-B-32", pretrained_id="timm/vit_base_patch32_clip_224.openai",
            image_size=224, patch_size=32, supports_text=True, global_dim=512, patch_dim=512,
        ),
        ModelCard(
            name="dinov2", architecture="DINOv2 ViT-B/14", pretrained_id="facebook/dinov2-base",
            image_size=224, patch_size=14, supports_text=False, global_dim=768, patch_dim=768,
        ),
        ModelCard(
            name="dinov2-reg", architecture="DINOv2 ViT-B/14 with 4 registers",
            pretrained_id="facebook/dinov2-with-registers-base",
            image_size=224, patch_size=14, supports_text=False, global_dim=768, patch_dim=768,
        ),
        ModelCard(
            name="dinov3", architecture="DINOv3 ViT-S/16 with 4 registers",
            pretrained_id="facebook/dinov3-vits16-pretrain-lvd1689m",
            image_size=224, patch_size=16, supports_text=False, global_dim=384, patch_dim=384,
        ),
        ModelCard(
            name="siglip", architecture="SigLIP base patch16-224", pretrained_id="google/siglip-base-patch16-224",
            image_size=224, patch_size=16, supports_text=True, global_dim=768, patch_dim=768,
        ),
    )
}


def list_models() -> tuple[str, ...]:
    """Every public model name, in listing order."""
    return tuple(_CARDS)


def text_models() -> tuple[str, ...]:
    """The models with a text tower (EmbedText, text search, captions), in listing order."""
    return tuple(name for name, card in _CARDS.items() if card.supports_text)


def get_card(name: str) -> ModelCard:
    """The card of model `name`; UnknownModelError naming the valid names otherwise."""
    try:
        return _CARDS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid names: {', '.join(_CARDS)}") from None

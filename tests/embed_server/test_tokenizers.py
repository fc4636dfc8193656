"""Our torch-free tokenizers against the libraries' own."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest

from embed_server.models import CARDS
from embed_server.models.tokenizers import SIGLIP_TEXT_LENGTH, load_tokenizer
from service_common.model_registry import list_models, text_models

TEXTS = [
    "a rose tattoo",
    "Geometric WOLF, fine-line!",
    "  koi   fish\tsleeve \n",
    "café déjà vu ünïcode 日本の鯉",
    "tom &amp; jerry's &lt;3",
    "e\u0301 (decomposed accent)",
    "🐉 dragon 🔥 on the forearm",
    "don't stop, it's 3.5 inches",
    "x",
    "traditional " * 100,  # truncated: must still end with end-of-text
]


def test_clip_tokens_match_open_clip() -> None:
    ours = load_tokenizer(CARDS["clip"], None)
    assert ours is not None
    reference = open_clip.tokenizer.SimpleTokenizer(context_length=77)(TEXTS).numpy()
    np.testing.assert_array_equal(ours(TEXTS), reference)


def test_siglip_pads_every_text_to_its_trained_length() -> None:
    ours = load_tokenizer(CARDS["siglip"], None)
    assert ours is not None
    ids = ours(["rose", "a geometric wolf tattoo on the back " * 20])
    assert ids.shape == (2, SIGLIP_TEXT_LENGTH) and ids.dtype == np.int64


@pytest.mark.parametrize("name", [name for name in list_models() if name not in text_models()])
def test_models_without_a_text_tower_have_no_tokenizer(name: str) -> None:
    assert load_tokenizer(CARDS[name], None) is None

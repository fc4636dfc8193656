from __future__ import annotations

import re

import pytest

from embed_server.config import MODEL_NAMES, EmbedSettings, SettingsError


def test_defaults() -> None:
    settings = EmbedSettings.from_env({})
    assert settings.port == 50051 and settings.models == MODEL_NAMES
    assert settings.weights == "pretrained" and settings.architecture == "full"
    assert settings.onnx_memory_arena is False


def test_values_are_parsed() -> None:
    settings = EmbedSettings.from_env(
        {"EMBED_MODELS": " CLIP, siglip ,clip", "EMBED_MAX_BATCH_SIZE": "16", "EMBED_PRELOAD": "no", "EMBED_DEVICE": "cuda:1",
         "EMBED_ONNX_MEMORY_ARENA": "true"}
    )
    assert settings.onnx_memory_arena is True
    assert settings.models == ("clip", "siglip") and settings.max_batch_size == 16
    assert settings.preload is False and settings.device == "cuda:1"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"EMBED_PORT": "http"}, "EMBED_PORT"),
        ({"EMBED_MODELS": "clip,resnet"}, f"valid names: {', '.join(MODEL_NAMES)}"),
        ({"EMBED_WEIGHTS": "imagenet"}, "EMBED_WEIGHTS='imagenet' is not one of pretrained, random"),
        ({"EMBED_ARCHITECTURE": "tiny"}, "EMBED_ARCHITECTURE=tiny needs EMBED_WEIGHTS=random"),
        ({"EMBED_MAX_BATCH_SIZE": "0"}, "EMBED_MAX_BATCH_SIZE='0' must be at least 1"),
        ({"EMBED_DEVICE": "tpu"}, "EMBED_DEVICE"),
        ({"EMBED_PRELOAD": "maybe"}, "EMBED_PRELOAD"),
        ({"EMBED_MAX_QUEUE_SIZE": "16"}, "EMBED_MAX_QUEUE_SIZE must be at least"),
        # A misspelt name would do nothing, silently: refused with the name meant.
        ({"EMBED_TORCH_THREADS": "1"}, "unknown setting: EMBED_TORCH_THREADS (did you mean EMBED_THREADS?)"),
        ({"EMBED_MAX_BATCH": "32"}, "EMBED_MAX_BATCH (did you mean EMBED_MAX_BATCH_SIZE?)"),
        ({"EMBED_LOAD_RETRY_INITIAL_S": "10", "EMBED_LOAD_RETRY_MAX_S": "1"}, "EMBED_LOAD_RETRY_MAX_S must be at least"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        EmbedSettings.from_env(env)

"""Choosing the runtime for a built model from the settings."""

from __future__ import annotations

from embed_server.config import EmbedSettings
from embed_server.models.base import BuiltModel
from embed_server.runtimes.base import Runtime
from embed_server.runtimes.torch_runtime import TorchRuntime, resolve_device


def create_runtime(built: BuiltModel, settings: EmbedSettings) -> Runtime:
    device = resolve_device(settings.device)
    return TorchRuntime(built, device)

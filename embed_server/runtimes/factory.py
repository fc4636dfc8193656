"""Choosing and building the runtime for a model from the settings."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

from embed_server.config import EmbedSettings
from embed_server.models.cards import ModelCard
from embed_server.runtimes.base import Runtime

if TYPE_CHECKING:
    from embed_server.models.base import Towers


def resolve_runtime(settings: EmbedSettings) -> str:
    if settings.runtime != "auto":
        return settings.runtime
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def create_runtime(
    card: ModelCard, fingerprint: str, build_towers: Callable[[], Towers], settings: EmbedSettings, text_length: int
) -> Runtime:
    if resolve_runtime(settings) == "onnx":
        from embed_server.runtimes.onnx_export import ExportCache
        from embed_server.runtimes.onnx_runtime import OnnxRuntime

        return OnnxRuntime(
            card,
            fingerprint,
            build_towers,
            cache=ExportCache(settings.onnx_cache_dir),
            device=settings.device,
            precision=settings.precision,
            threads=settings.threads,
            max_batch_size=settings.max_batch_size,
            text_length=text_length,
            memory_arena=settings.onnx_memory_arena,
        )
    from embed_server.runtimes.torch_runtime import TorchRuntime, resolve_device

    device = resolve_device(settings.device)
    if settings.precision == "int8":
        raise RuntimeError("EMBED_PRECISION=int8 needs EMBED_RUNTIME=onnx (ONNX Runtime's int8 kernels)")
    if settings.precision == "fp16" and device.type != "cuda":
        raise RuntimeError("EMBED_PRECISION=fp16 with torch needs a CUDA device")
    return TorchRuntime(build_towers(), device)

"""Choosing and building the runtime for a model from the settings."""

from __future__ import annotations

import importlib.util
import logging

from embed_server.config import EmbedSettings
from embed_server.models.cards import ModelCard, Tokenizer
from embed_server.runtimes.base import ModelWeights, Runtime

log = logging.getLogger(__name__)


def resolve_runtime(settings: EmbedSettings) -> str:
    if settings.runtime != "auto":
        return settings.runtime
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def create_runtime(
    card: ModelCard, weights: ModelWeights, settings: EmbedSettings, tokenizer: Tokenizer | None
) -> Runtime:
    if resolve_runtime(settings) == "onnx":
        from embed_server.runtimes.export_check import ExportMismatch
        from embed_server.runtimes.onnx_export import ExportCache
        from embed_server.runtimes.onnx_runtime import OnnxRuntime

        try:
            runtime = OnnxRuntime(
                card,
                weights,
                cache=ExportCache(settings.onnx_cache_dir),
                device=settings.device,
                precision=settings.precision,
                threads=settings.threads,
                max_batch_size=settings.max_batch_size,
                tokenizer=tokenizer,
                memory_arena=settings.onnx_memory_arena,
                int8_mode=settings.int8_mode,
            )
        except ExportMismatch as exc:
            # The export was not cached; the torch model it was checked against is
            # built already and right by definition, so it serves (slower) rather than
            # a wrong file or nothing.
            reason = f"{exc}; serving with torch instead"
            log.error("%s: %s", card.name, reason)
            return _torch_runtime(weights, settings, fallback=reason)
        # Exports made or found: the torch modules are not kept resident.
        weights.release()
        return runtime
    return _torch_runtime(weights, settings)


def _torch_runtime(weights: ModelWeights, settings: EmbedSettings, fallback: str = "") -> Runtime:
    from embed_server.runtimes.torch_runtime import TorchRuntime, resolve_device

    device = resolve_device(settings.device)
    # A fallback serves in torch's own precision for the device (int8 exists only in
    # ONNX Runtime); a configured torch runtime holds the settings to what it can do.
    if not fallback and settings.precision == "int8":
        raise RuntimeError("EMBED_PRECISION=int8 needs EMBED_RUNTIME=onnx (ONNX Runtime's int8 kernels)")
    if not fallback and settings.precision == "fp16" and device.type != "cuda":
        raise RuntimeError("EMBED_PRECISION=fp16 with torch needs a CUDA device")
    return TorchRuntime(weights.towers(), device, weights_fingerprint=weights.fingerprint(), fallback=fallback)

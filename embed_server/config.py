"""Settings, read once at start-up from `EMBED_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from service_common.unknown_settings import unknown_settings_message

MODEL_NAMES = ("clip", "dinov2", "dinov2-reg", "dinov3", "siglip")
WEIGHTS_CHOICES = ("pretrained", "random")
ARCHITECTURE_CHOICES = ("full", "tiny")
RUNTIME_CHOICES = ("auto", "torch", "onnx")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class EmbedSettings:
    host: str = "127.0.0.1"
    port: int = 50051
    models: tuple[str, ...] = MODEL_NAMES
    # "pretrained" loads real weights offline and fails loudly when they are absent;
    # "random" builds the full architecture with seeded random weights (demos, benchmarks).
    weights: str = "pretrained"
    weights_dir: Path | None = None
    # "tiny" shrinks every model to a few layers of the same classes with the same patch
    # grids: for tests and development only, and only with random weights.
    architecture: str = "full"
    seed: int = 0
    device: str = "auto"
    runtime: str = "auto"
    precision: str = "auto"
    onnx_cache_dir: Path = Path("var/onnx-cache")
    # ONNX Runtime's CPU memory arena keeps the activations of the largest batch each
    # model has run, for good: about 700 MB across the five models at batch 8, for a
    # speed gain within this machine's noise (0-6%). Off unless asked for.
    onnx_memory_arena: bool = False
    # Load every configured model at start-up (health turns SERVING once all are warm);
    # when false, each model loads on its first request.
    preload: bool = True
    # A model that failed to load (weights not there yet, out of memory) is tried again
    # in the background, the wait doubling from the first value up to the second.
    load_retry_initial_s: float = 5.0
    load_retry_max_s: float = 300.0
    max_batch_size: int = 8
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 128
    max_images_per_request: int = 64
    max_texts_per_request: int = 256
    max_text_chars: int = 1000
    max_request_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Threads of one forward pass (torch's and ONNX Runtime's intra-op pools). On a CPU
    # box the forward pass should own the cores; decoding runs in its own small pool.
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    decode_workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmbedSettings:
        env = os.environ if environ is None else environ
        default = cls()
        reader = _Reader(env)
        settings = cls(
            host=reader.get("EMBED_HOST", str, default.host),
            port=reader.get("EMBED_PORT", int, default.port, minimum=0),
            models=reader.get("EMBED_MODELS", _model_list, default.models),
            weights=reader.choice("EMBED_WEIGHTS", WEIGHTS_CHOICES, default.weights),
            weights_dir=reader.get("EMBED_WEIGHTS_DIR", Path, None),
            architecture=reader.choice("EMBED_ARCHITECTURE", ARCHITECTURE_CHOICES, default.architecture),
            seed=reader.get("EMBED_SEED", int, default.seed),
            device=reader.get("EMBED_DEVICE", _device, default.device),
            runtime=reader.choice("EMBED_RUNTIME", RUNTIME_CHOICES, default.runtime),
            precision=reader.choice("EMBED_PRECISION", PRECISION_CHOICES, default.precision),
            onnx_cache_dir=reader.get("EMBED_ONNX_CACHE_DIR", Path, default.onnx_cache_dir),
            onnx_memory_arena=reader.get("EMBED_ONNX_MEMORY_ARENA", _boolean, default.onnx_memory_arena),
            preload=reader.get("EMBED_PRELOAD", _boolean, default.preload),
            load_retry_initial_s=reader.get(
                "EMBED_LOAD_RETRY_INITIAL_S", float, default.load_retry_initial_s, minimum=0.01
            ),
            load_retry_max_s=reader.get("EMBED_LOAD_RETRY_MAX_S", float, default.load_retry_max_s, minimum=0.01),
            max_batch_size=reader.get("EMBED_MAX_BATCH_SIZE", int, default.max_batch_size, minimum=1),
            max_queue_delay_ms=reader.get(
                "EMBED_MAX_QUEUE_DELAY_MS", float, default.max_queue_delay_ms, minimum=0
            ),
            max_queue_size=reader.get("EMBED_MAX_QUEUE_SIZE", int, default.max_queue_size, minimum=1),
            max_images_per_request=reader.get(
                "EMBED_MAX_IMAGES_PER_REQUEST", int, default.max_images_per_request, minimum=1
            ),
            max_texts_per_request=reader.get(
                "EMBED_MAX_TEXTS_PER_REQUEST", int, default.max_texts_per_request, minimum=1
            ),
            max_text_chars=reader.get("EMBED_MAX_TEXT_CHARS", int, default.max_text_chars, minimum=1),
            max_request_bytes=reader.get(
                "EMBED_MAX_REQUEST_BYTES", int, default.max_request_bytes, minimum=1024
            ),
            max_image_pixels=reader.get(
                "EMBED_MAX_IMAGE_PIXELS", int, default.max_image_pixels, minimum=1
            ),
            threads=reader.get("EMBED_THREADS", int, default.threads, minimum=1),
            decode_workers=reader.get("EMBED_DECODE_WORKERS", int, default.decode_workers, minimum=1),
            log_level=reader.get("EMBED_LOG_LEVEL", str.upper, default.log_level),
        )
        # Every EMBED_* name is known once all were read: anything else is a typo.
        unknown = unknown_settings_message(env, "EMBED_", reader.keys)
        if unknown is not None:
            raise SettingsError(unknown)
        if settings.load_retry_max_s < settings.load_retry_initial_s:
            raise SettingsError("EMBED_LOAD_RETRY_MAX_S must be at least EMBED_LOAD_RETRY_INITIAL_S")
        if settings.architecture == "tiny" and settings.weights != "random":
            raise SettingsError("EMBED_ARCHITECTURE=tiny needs EMBED_WEIGHTS=random")
        if settings.max_queue_size < max(settings.max_batch_size, settings.max_images_per_request):
            # A request must fit in an empty queue, or it would be refused as "overloaded"
            # however idle the server is.
            raise SettingsError(
                "EMBED_MAX_QUEUE_SIZE must be at least EMBED_MAX_BATCH_SIZE and EMBED_MAX_IMAGES_PER_REQUEST"
            )
        return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.keys: set[str] = set()  # every variable asked for: the valid names

    def get(
        self,
        key: str,
        parse: Callable[[str], T],
        default: T,
        minimum: float | None = None,
    ) -> T:
        self.keys.add(key)
        raw = self._env.get(key, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{key}={raw!r} is not valid: {exc}") from None
        if minimum is not None and value < minimum:  # type: ignore[operator]
            raise SettingsError(f"{key}={raw!r} must be at least {minimum}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str.lower, default)
        if value not in choices:
            raise SettingsError(f"{key}={value!r} is not one of {', '.join(choices)}")
        return value


def _model_list(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip().lower() for name in raw.split(",") if name.strip()))
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model {', '.join(unknown)}; valid names: {', '.join(MODEL_NAMES)}")
    if not names:
        raise ValueError("name at least one model")
    return names


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _device(raw: str) -> str:
    lowered = raw.lower()
    if lowered in ("auto", "cpu", "cuda") or (lowered.startswith("cuda:") and lowered[5:].isdigit()):
        return lowered
    raise ValueError("expected auto, cpu, cuda or cuda:N")

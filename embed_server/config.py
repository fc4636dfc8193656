"""Settings, read once at start-up from `EMBED_*` environment variables
(`EmbedSettings.from_env()`; the shared rules are in service_common/settings.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from service_common import model_registry
from service_common.grpc_security import ServerSecurity, server_problem
from service_common.settings import AtLeastOne, CommaList, Lower, ServiceSettings, SettingsError, Upper

__all__ = ["MODEL_NAMES", "EmbedSettings", "SettingsError"]

MODEL_NAMES = model_registry.list_models()  # the registry decides which models exist


def _all_cores() -> int:
    return os.cpu_count() or 1


def _decode_threads() -> int:
    return min(4, os.cpu_count() or 1)


class EmbedSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_")

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    # Securing calls (service_common/grpc_security.py), all off by default: TLS with this
    # certificate and key, mutual TLS with a client CA, a bearer token (needs TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_token: SecretStr | None = None
    # Prometheus metrics over HTTP on this port, on the same host as gRPC; 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Close each client connection gracefully after this many seconds (0: never), so that
    # clients balancing over a DNS name find replicas added since they connected.
    max_connection_age_s: NonNegativeFloat = 0.0
    # Seconds calls in flight get to finish after SIGTERM before they are cancelled.
    grace_s: NonNegativeFloat = 5.0
    models: Annotated[CommaList[str], Lower] = MODEL_NAMES
    # "pretrained" loads real weights offline and fails loudly when they are absent;
    # "random" builds the full architecture with seeded random weights (demos, benchmarks).
    weights: Annotated[Literal["pretrained", "random"], Lower] = "pretrained"
    weights_dir: Path | None = None
    # "tiny" shrinks every model to a few layers of the same classes with the same patch
    # grids: for tests and development only, and only with random weights.
    architecture: Annotated[Literal["full", "tiny"], Lower] = "full"
    seed: int = 0
    # auto, cpu, cuda or cuda:N
    device: Annotated[str, Lower] = "auto"
    runtime: Annotated[Literal["auto", "torch", "onnx"], Lower] = "auto"
    precision: Annotated[Literal["auto", "fp32", "fp16", "int8"], Lower] = "auto"
    # Which int8 (EMBED_PRECISION=int8): "dynamic" measures activation ranges per batch,
    # "static" fixes them at export from a calibration set; "auto" takes, per model, the
    # one measured better (embed_server/runtimes/int8_modes.py).
    int8_mode: Annotated[Literal["auto", "dynamic", "static"], Lower] = "auto"
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
    load_retry_initial_s: float = Field(default=5.0, ge=0.01)
    load_retry_max_s: float = Field(default=300.0, ge=0.01)
    max_batch_size: AtLeastOne = 8
    max_queue_delay_ms: NonNegativeFloat = 5.0
    max_queue_size: AtLeastOne = 128
    max_images_per_request: AtLeastOne = 64
    max_texts_per_request: AtLeastOne = 256
    max_text_chars: AtLeastOne = 1000
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_image_pixels: AtLeastOne = 40_000_000
    # Threads of one forward pass (torch's and ONNX Runtime's intra-op pools). On a CPU
    # box the forward pass should own the cores; decoding runs in its own small pool.
    threads: AtLeastOne = Field(default_factory=_all_cores)
    decode_workers: AtLeastOne = Field(default_factory=_decode_threads)
    log_level: Annotated[str, Upper] = "INFO"

    @field_validator("models")
    @classmethod
    def _known_models(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(names))  # "clip,clip" serves clip once
        unknown = [name for name in names if name not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"names an unknown model {', '.join(unknown)}; valid names: {', '.join(MODEL_NAMES)}")
        if not names:
            raise ValueError("must name at least one model")
        return names

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError("is not one of auto, cpu, cuda, cuda:N")

    @model_validator(mode="after")
    def _rules_between_settings(self) -> EmbedSettings:
        problem = server_problem("EMBED_", self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file,
                                 self.auth_token)
        if problem:
            raise ValueError(problem)
        if self.load_retry_max_s < self.load_retry_initial_s:
            raise ValueError(
                f"EMBED_LOAD_RETRY_MAX_S must be at least EMBED_LOAD_RETRY_INITIAL_S"
                f" (got {self.load_retry_max_s} < {self.load_retry_initial_s})"
            )
        if self.architecture == "tiny" and self.weights != "random":
            raise ValueError("EMBED_ARCHITECTURE=tiny needs EMBED_WEIGHTS=random")
        if self.max_queue_size < max(self.max_batch_size, self.max_images_per_request):
            # A request must fit in an empty queue, or it would be refused as "overloaded"
            # however idle the server is.
            raise ValueError(
                f"EMBED_MAX_QUEUE_SIZE must be at least EMBED_MAX_BATCH_SIZE and EMBED_MAX_IMAGES_PER_REQUEST"
                f" (got {self.max_queue_size} < {max(self.max_batch_size, self.max_images_per_request)})"
            )
        return self

    @property
    def security(self) -> ServerSecurity:
        return ServerSecurity("EMBED_", self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, self.auth_token)

"""Gateway settings, read once at start-up from ``GATEWAY_*`` environment variables.

Every value is parsed and range-checked here, so that a typo fails the process at
start with the name of the variable instead of surfacing as a 500 in the middle of
a search.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from service_common.unknown_settings import unknown_settings_message

PREFIX = "GATEWAY_"

# The embed server's public model names (see embed.proto). Requests are checked
# against what the embed server says it serves; this list is the fallback while it
# cannot be asked.
KNOWN_MODELS: tuple[str, ...] = ("clip", "dinov2", "dinov2-reg", "dinov3", "siglip")
CAPTION_MODES: tuple[str, ...] = ("offline", "remote", "none")

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names the variable."""


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


@dataclass(frozen=True)
class GatewaySettings:
    """All gateway configuration. Field ``foo_bar`` is read from ``GATEWAY_FOO_BAR``."""

    # --- serving
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Slow clients (search_gateway/server.py): the request line and headers must arrive
    # within header_timeout_s, a request body may pause at most body_idle_timeout_s
    # between chunks, and one peer address may hold this many connections (0: no cap;
    # GATEWAY_TRUSTED_PROXIES are not capped: every client behind them shares their address).
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 15.0
    max_connections_per_client: int = 64
    # --- backends: gRPC target strings, e.g. "dns:///embed:50051" or
    # "ipv4:10.0.0.5:50051,10.0.0.6:50051"; balanced round robin.
    embed_target: str = "127.0.0.1:50051"
    scraper_target: str = "127.0.0.1:50052"
    embed_timeout_s: float = 15.0
    scraper_timeout_s: float = 15.0
    rpc_retries: int = 2
    # Cap gRPC's reconnect back-off so that a restarted backend is found again within
    # seconds instead of gRPC's default two minutes.
    reconnect_backoff_max_ms: int = 2000
    default_model: str = "clip"
    # --- search
    search_budget_s: float = 10.0
    max_candidates: int = 100
    max_results: int = 15
    max_results_limit: int = 100
    attention_top: int = 3
    embed_batch: int = 8
    embed_batch_wait_ms: int = 15
    embed_batch_bytes: int = 3 * 1024 * 1024
    embed_concurrency: int = 2
    # Images are re-encoded for the embed server with their short side at most this
    # (twice the models' 224 px input): less to send and to decode on the far side.
    embed_image_side: int = 448
    # --- uploads and downloads
    upload_max_bytes: int = 10 * 1024 * 1024
    download_max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    download_concurrency: int = 32
    download_per_host: int = 8
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    download_timeout_s: float = 10.0
    download_retries: int = 2
    retry_backoff_s: float = 0.2
    max_redirects: int = 5
    fetch_allow: tuple[str, ...] = ()
    user_agent: str = "tattoo-search-gateway/0.1 (+image similarity search)"
    # --- embedding cache
    cache_size: int = 20_000
    cache_ttl_s: float = 3600.0
    # --- failed downloads, remembered by URL (failed_downloads.py): lasting failures
    # (4xx, not an image, too large) for the long time, transient ones (timeout, 5xx,
    # connection refused) for the short one.
    failed_download_ttl_s: float = 3600.0
    failed_download_retry_s: float = 60.0
    failed_download_entries: int = 20_000
    # --- captioning
    caption_mode: str = "offline"
    caption_model: str = "clip"
    caption_url: str = ""
    caption_remote_model: str = ""
    caption_token: str = ""
    caption_timeout_s: float = 8.0
    # --- access
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    # Addresses or CIDR ranges of reverse proxies whose X-Forwarded-For / Forwarded
    # headers name the client (access.py). Empty: those headers are ignored, and the
    # rate limit counts by the connecting address.
    trusted_proxies: tuple[str, ...] = ()
    rate_limit_per_minute: int = 120
    rate_limit_burst: int = 30
    # --- result thumbnails
    thumbnail_secret: str = ""
    thumbnail_ttl_s: float = 3600.0
    thumbnail_max_side: int = 512

    def __post_init__(self) -> None:
        # A random per-process secret keeps thumbnails working for one process; set
        # GATEWAY_THUMBNAIL_SECRET when several gateway replicas serve one site.
        if not self.thumbnail_secret:
            object.__setattr__(self, "thumbnail_secret", secrets.token_hex(32))
        self._validate()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Build settings from ``GATEWAY_*`` variables (``os.environ`` by default)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = PREFIX + field.name.upper()
            if key not in source:
                continue
            raw = source[key]
            parse = _parser_for(field.type)
            try:
                values[field.name] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{key}={raw!r} is invalid: {exc}") from None
        known = {PREFIX + f.name.upper() for f in dataclasses.fields(cls)}
        unknown = unknown_settings_message(source, PREFIX, known)
        if unknown is not None:
            raise ConfigError(unknown)
        return cls(**values)

    def _validate(self) -> None:
        def need(condition: bool, name: str, why: str) -> None:
            if not condition:
                value = getattr(self, name)
                raise ConfigError(f"{PREFIX}{name.upper()}={value!r} is invalid: {why}")

        need(0 <= self.port <= 65535, "port", "must be 0..65535")
        need(bool(self.embed_target.strip()), "embed_target", "must name a gRPC target")
        need(bool(self.scraper_target.strip()), "scraper_target", "must name a gRPC target")
        need(self.default_model in KNOWN_MODELS, "default_model", f"must be one of {', '.join(KNOWN_MODELS)}")
        need(self.caption_model in ("clip", "siglip"), "caption_model", "must be a model with a text tower: clip or siglip")
        need(self.caption_mode in CAPTION_MODES, "caption_mode", f"must be one of {', '.join(CAPTION_MODES)}")
        if self.caption_mode == "remote":
            need(self.caption_url.startswith(("http://", "https://")), "caption_url", "remote captioning needs an http(s) URL")
            need(bool(self.caption_remote_model), "caption_remote_model", "remote captioning needs a model name")
        for name in ("search_budget_s", "embed_timeout_s", "scraper_timeout_s", "connect_timeout_s",
                     "read_timeout_s", "download_timeout_s", "caption_timeout_s", "thumbnail_ttl_s",
                     "header_timeout_s", "body_idle_timeout_s"):
            need(getattr(self, name) > 0, name, "must be > 0")
        for name in ("max_candidates", "max_results", "max_results_limit", "embed_batch", "embed_concurrency",
                     "upload_max_bytes", "download_max_bytes", "max_pixels", "download_concurrency",
                     "download_per_host", "cache_size", "embed_batch_bytes", "embed_image_side",
                     "thumbnail_max_side", "reconnect_backoff_max_ms"):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("rpc_retries", "download_retries", "attention_top", "embed_batch_wait_ms",
                     "rate_limit_per_minute", "retry_backoff_s", "cache_ttl_s", "max_connections_per_client",
                     "failed_download_ttl_s", "failed_download_retry_s", "failed_download_entries"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.max_results <= self.max_results_limit, "max_results", "must be <= GATEWAY_MAX_RESULTS_LIMIT")
        need(0 <= self.max_redirects <= 5, "max_redirects", "must be 0..5")
        need(self.rate_limit_burst >= 1, "rate_limit_burst", "must be >= 1")
        need(self.embed_image_side >= 224, "embed_image_side", "must be >= 224 (the models' input size)")
        # Imported here to keep config importable on its own; the allowlist grammar
        # lives with the code that enforces it.
        from search_gateway.netguard import parse_allowlist

        try:
            parse_allowlist(self.fetch_allow)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}FETCH_ALLOW is invalid: {exc}") from None
        from search_gateway.access import parse_trusted_proxies

        try:
            parse_trusted_proxies(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}TRUSTED_PROXIES is invalid: {exc}") from None


def _parser_for(annotation: object) -> Callable[[str], Any]:
    # dataclass field types are strings under `from __future__ import annotations`.
    parsers: dict[str, Callable[[str], Any]] = {
        "str": str,
        "int": int,
        "float": float,
        "bool": _bool,
        "tuple[str, ...]": _csv,
    }
    return parsers[str(annotation)]

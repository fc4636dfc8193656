"""Settings for the scraper service, read once at start-up from ``SCRAPER_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from service_common.unknown_settings import unknown_settings, unknown_settings_message

PREFIX = "SCRAPER_"
KNOWN_ENGINES = ("duckduckgo", "catalog")
_SAFESEARCH = ("on", "moderate", "off")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScraperSettings:
    host: str = "127.0.0.1"
    port: int = 50052
    engines: tuple[str, ...] = ("duckduckgo",)
    catalog: Path | None = None
    cache_ttl_s: float = 3600.0
    cache_size: int = 1000
    max_results: int = 50
    max_results_limit: int = 500
    min_results: int = 10
    platform_timeout_s: float = 15.0
    retry_attempts: int = 3
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 8.0
    workers: int = 8
    ddgs_backend: str = "duckduckgo"
    ddgs_region: str = "us-en"
    ddgs_safesearch: str = "moderate"
    grace_s: float = 5.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # Checked here as well as in from_env so that settings built in code
        # (tests, embedding) fail just as early and just as clearly.
        _check(0 <= self.port <= 65535, "SCRAPER_PORT", "must be between 0 and 65535", self.port)
        _check(bool(self.engines), "SCRAPER_ENGINES", "must name at least one engine", "")
        for name in self.engines:
            _check(
                name in KNOWN_ENGINES,
                "SCRAPER_ENGINES",
                f"names an unknown engine {name!r}; available: {', '.join(KNOWN_ENGINES)}",
                ",".join(self.engines),
            )
        if "catalog" in self.engines:
            _check(
                self.catalog is not None,
                "SCRAPER_CATALOG",
                "must be set to a JSON Lines manifest when SCRAPER_ENGINES includes catalog",
                "",
            )
        _check(self.cache_ttl_s >= 0, "SCRAPER_CACHE_TTL_S", "must be >= 0 (0 disables the cache)", self.cache_ttl_s)
        _check(self.cache_size >= 0, "SCRAPER_CACHE_SIZE", "must be >= 0 (0 disables the cache)", self.cache_size)
        _check(self.max_results_limit >= 1, "SCRAPER_MAX_RESULTS_LIMIT", "must be >= 1", self.max_results_limit)
        _check(
            1 <= self.max_results <= self.max_results_limit,
            "SCRAPER_MAX_RESULTS",
            f"must be between 1 and SCRAPER_MAX_RESULTS_LIMIT ({self.max_results_limit})",
            self.max_results,
        )
        _check(self.min_results >= 1, "SCRAPER_MIN_RESULTS", "must be >= 1", self.min_results)
        _check(self.platform_timeout_s > 0, "SCRAPER_PLATFORM_TIMEOUT_S", "must be > 0", self.platform_timeout_s)
        _check(
            1 <= self.retry_attempts <= 10, "SCRAPER_RETRY_ATTEMPTS", "must be between 1 and 10", self.retry_attempts
        )
        _check(self.retry_backoff_s >= 0, "SCRAPER_RETRY_BACKOFF_S", "must be >= 0", self.retry_backoff_s)
        _check(
            self.retry_backoff_max_s >= self.retry_backoff_s,
            "SCRAPER_RETRY_BACKOFF_MAX_S",
            "must be >= SCRAPER_RETRY_BACKOFF_S",
            self.retry_backoff_max_s,
        )
        _check(1 <= self.workers <= 64, "SCRAPER_WORKERS", "must be between 1 and 64", self.workers)
        _check(
            self.ddgs_safesearch in _SAFESEARCH,
            "SCRAPER_DDGS_SAFESEARCH",
            f"must be one of {', '.join(_SAFESEARCH)}",
            self.ddgs_safesearch,
        )
        _check(self.grace_s >= 0, "SCRAPER_GRACE_S", "must be >= 0", self.grace_s)
        _check(
            self.log_level in _LOG_LEVELS,
            "SCRAPER_LOG_LEVEL",
            f"must be one of {', '.join(_LOG_LEVELS)}",
            self.log_level,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScraperSettings:
        """Build settings from ``SCRAPER_*`` variables; raise ``ValueError`` naming a bad key."""
        env = os.environ if environ is None else environ
        # A misspelt variable would otherwise do nothing, silently: refuse it, naming the
        # closest valid name.
        unknown = unknown_settings_message(env, PREFIX, _known_keys())
        if unknown is not None:
            raise ValueError(unknown)
        values: dict[str, object] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(key, raw.strip(), _PARSERS.get(f.name, str))
        return cls(**values)  # type: ignore[arg-type]


def unknown_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SCRAPER_*`` variables that match no setting (``from_env`` refuses them)."""
    env = os.environ if environ is None else environ
    return unknown_settings(env, PREFIX, _known_keys())


def _known_keys() -> set[str]:
    return {PREFIX + f.name.upper() for f in fields(ScraperSettings)}


def _engines(raw: str) -> tuple[str, ...]:
    return tuple(name.strip().lower() for name in raw.split(",") if name.strip())


_PARSERS: dict[str, Callable[[str], object]] = {
    "port": int,
    "engines": _engines,
    "catalog": Path,
    "cache_ttl_s": float,
    "cache_size": int,
    "max_results": int,
    "max_results_limit": int,
    "min_results": int,
    "platform_timeout_s": float,
    "retry_attempts": int,
    "retry_backoff_s": float,
    "retry_backoff_max_s": float,
    "workers": int,
    "ddgs_safesearch": str.lower,
    "grace_s": float,
    "log_level": str.upper,
}


def _parse(key: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw)
    except ValueError:
        kind = getattr(parser, "__name__", "value")
        raise ValueError(f"{key} must be a valid {kind}, got {raw!r}") from None


def _check(ok: bool, key: str, message: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{key} {message} (got {value!r})")

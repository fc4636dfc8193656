"""Settings for the scraper service, read once at start-up from ``SCRAPER_*`` variables
(``ScraperSettings.from_env()``; the shared rules are in service_common/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from service_common.grpc_security import ServerSecurity, server_problem
from service_common.settings import AtLeastOne, CommaList, Lower, ServiceSettings, Upper

Engine = Literal["duckduckgo", "catalog"]
KNOWN_ENGINES: tuple[str, ...] = get_args(Engine)


class ScraperSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRAPER_")

    host: str = "127.0.0.1"
    port: int = Field(default=50052, ge=0, le=65535)
    # Prometheus metrics over HTTP on this port, on the same host as gRPC; 0: off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Close each client connection gracefully after this many seconds (0: never), so that
    # clients balancing over a DNS name find replicas added since they connected.
    max_connection_age_s: NonNegativeFloat = 0.0
    # Securing calls (service_common/grpc_security.py), all off by default: TLS with this
    # certificate and key, mutual TLS with a client CA, a bearer token (needs TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_token: SecretStr | None = None
    engines: Annotated[CommaList[Engine], Lower, Field(min_length=1)] = ("duckduckgo",)
    catalog: Path | None = None
    # 0 disables the cache (either of the two).
    cache_ttl_s: NonNegativeFloat = 3600.0
    cache_size: NonNegativeInt = 1000
    max_results: AtLeastOne = 50
    max_results_limit: AtLeastOne = 500
    min_results: AtLeastOne = 10
    platform_timeout_s: PositiveFloat = 15.0
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_s: NonNegativeFloat = 1.0
    retry_backoff_max_s: NonNegativeFloat = 8.0
    workers: int = Field(default=8, ge=1, le=64)
    ddgs_backend: str = "duckduckgo"
    ddgs_region: str = "us-en"
    ddgs_safesearch: Annotated[Literal["on", "moderate", "off"], Lower] = "moderate"
    grace_s: NonNegativeFloat = 5.0
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Upper] = "INFO"

    @model_validator(mode="after")
    def _rules_between_settings(self) -> ScraperSettings:
        problem = server_problem("SCRAPER_", self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file,
                                 self.auth_token)
        if problem:
            raise ValueError(problem)
        if "catalog" in self.engines and self.catalog is None:
            raise ValueError("SCRAPER_CATALOG must be set to a JSON Lines manifest when SCRAPER_ENGINES includes catalog")
        if self.max_results > self.max_results_limit:
            raise ValueError(
                f"SCRAPER_MAX_RESULTS must be at most SCRAPER_MAX_RESULTS_LIMIT"
                f" (got {self.max_results} > {self.max_results_limit})"
            )
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError(
                f"SCRAPER_RETRY_BACKOFF_MAX_S must be at least SCRAPER_RETRY_BACKOFF_S"
                f" (got {self.retry_backoff_max_s} < {self.retry_backoff_s})"
            )
        return self

    @property
    def security(self) -> ServerSecurity:
        return ServerSecurity("SCRAPER_", self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file,
                              self.auth_token)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

"""Gateway settings, read once at start-up from ``GATEWAY_*`` environment variables
(``GatewaySettings.from_env()``; the shared rules are in service_common/settings.py).

Every value is parsed and range-checked here, so that a typo fails the process at
start with the name of the variable instead of surfacing as a 500 in the middle of
a search.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from service_common import model_registry
from service_common.grpc_security import ClientSecurity, client_problem
from service_common.settings import AtLeastOne, CommaList, Lower, ServiceSettings, SettingsError

# The public model names, to check the settings at start; requests are checked against
# what the embed server says it serves (search_gateway/clients/models.py).
KNOWN_MODELS: tuple[str, ...] = model_registry.list_models()
CaptionMode = Literal["offline", "remote", "none"]
CAPTION_MODES: tuple[str, ...] = get_args(CaptionMode)

# Names plain keys' tenants when GATEWAY_TENANT_SECRET is unset, which the settings allow
# only where no name is stored (the gallery off): one per process, never written anywhere.
_PROCESS_TENANT_KEY = secrets.token_bytes(32)

# The name the gateway's callers catch; every settings failure is this one type.
ConfigError = SettingsError

class GatewaySettings(ServiceSettings):
    """All gateway configuration. Field ``foo_bar`` is read from ``GATEWAY_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    # --- serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"
    # Slow clients (search_gateway/server.py): the request line and headers must arrive
    # within header_timeout_s, a request body may pause at most body_idle_timeout_s
    # between chunks, and one peer address may hold this many connections (0: no cap;
    # GATEWAY_TRUSTED_PROXIES are not capped: every client behind them shares their address).
    header_timeout_s: PositiveFloat = 10.0
    body_idle_timeout_s: PositiveFloat = 15.0
    max_connections_per_client: NonNegativeInt = 64
    # --- backends: gRPC target strings, e.g. "dns:///embed:50051" or
    # "ipv4:10.0.0.5:50051,10.0.0.6:50051"; balanced round robin.
    embed_target: str = Field(default="127.0.0.1:50051", min_length=1)
    scraper_target: str = Field(default="127.0.0.1:50052", min_length=1)
    embed_timeout_s: PositiveFloat = 15.0
    scraper_timeout_s: PositiveFloat = 15.0
    rpc_retries: NonNegativeInt = 2
    # Cap gRPC's reconnect back-off so that a restarted backend is found again within
    # seconds instead of gRPC's default two minutes.
    reconnect_backoff_max_ms: AtLeastOne = 2000
    default_model: Annotated[str, Lower] = "clip"
    # --- securing the gRPC calls (service_common/grpc_security.py), for both backends:
    # TLS when a CA is given (else plaintext), mutual TLS with a client certificate, a
    # server name to verify when the targets' hosts are not the certificates' names, and
    # each backend's bearer token (needs TLS).
    grpc_tls_ca_file: Path | None = None
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_server_name: str = ""
    embed_auth_token: SecretStr | None = None
    scraper_auth_token: SecretStr | None = None
    # --- search
    search_budget_s: PositiveFloat = 10.0
    max_candidates: AtLeastOne = 100
    max_results: AtLeastOne = 15
    max_results_limit: AtLeastOne = 100
    attention_top: NonNegativeInt = 3
    # Two-stage search (rerank=true): how many of the best results are re-ranked by patch
    # tokens when the request does not say; one EmbedPatches call each (docs/benchmarks.md).
    rerank_k: int = Field(default=20, ge=1, le=100)
    # Issue 23: store each gallery point's compact patch tokens when it is written (web points
    # by the background writer, uploads as they are stored): one EmbedPatches call an image.
    # off: none are written (re-ranking by default then finds none: results keep their global score).
    patch_tokens: Literal["on", "off"] = "on"
    embed_batch: AtLeastOne = 8
    embed_batch_wait_ms: NonNegativeInt = 15
    embed_batch_bytes: AtLeastOne = 3 * 1024 * 1024
    embed_concurrency: AtLeastOne = 2
    # Images are re-encoded for the embed server with their short side at most this
    # (twice the models' 224 px input): less to send and to decode on the far side.
    # At least the models' input size.
    embed_image_side: int = Field(default=448, ge=224)
    # --- uploads and downloads
    upload_max_bytes: AtLeastOne = 10 * 1024 * 1024
    download_max_bytes: AtLeastOne = 10 * 1024 * 1024
    max_pixels: AtLeastOne = 40_000_000
    download_concurrency: AtLeastOne = 32
    download_per_host: AtLeastOne = 8
    connect_timeout_s: PositiveFloat = 3.0
    read_timeout_s: PositiveFloat = 5.0
    download_timeout_s: PositiveFloat = 10.0
    download_retries: NonNegativeInt = 2
    retry_backoff_s: NonNegativeFloat = 0.2
    max_redirects: int = Field(default=5, ge=0, le=5)
    fetch_allow: CommaList[str] = ()
    user_agent: str = "tattoo-search-gateway/0.1 (+image similarity search)"
    # --- embedding cache
    cache_size: AtLeastOne = 20_000
    cache_ttl_s: NonNegativeFloat = 3600.0
    # --- failed downloads, remembered by URL (failed_downloads.py): lasting failures
    # (4xx, not an image, too large) for the long time, transient ones (timeout, 5xx,
    # connection refused) for the short one.
    failed_download_ttl_s: NonNegativeFloat = 3600.0
    failed_download_retry_s: NonNegativeFloat = 60.0
    failed_download_entries: NonNegativeInt = 20_000
    # --- captioning
    caption_mode: Annotated[CaptionMode, Lower] = "offline"
    # The offline captioner needs a model with a text tower.
    caption_model: Annotated[Literal["clip", "siglip"], Lower] = "clip"
    caption_url: str = ""
    caption_remote_model: str = ""
    caption_token: str = ""
    caption_timeout_s: PositiveFloat = 8.0
    # --- access
    cors_origins: CommaList[str] = ()
    # TENANT:KEY entries (a plain KEY is a tenant of its own): search_gateway/tenants.py.
    api_keys: CommaList[str] = ()
    # Keys the HMAC that names a plain KEY's tenant. Required with the gallery on and a
    # plain key (the name is stored with its collections: it must not change on a restart);
    # otherwise a random per-process one is used (nothing keeps the name).
    tenant_secret: SecretStr | None = None
    # Addresses or CIDR ranges of reverse proxies whose X-Forwarded-For / Forwarded
    # headers name the client (http/access.py). Empty: those headers are ignored, and the
    # rate limit counts by the connecting address.
    trusted_proxies: CommaList[str] = ()
    rate_limit_per_minute: NonNegativeInt = 120
    rate_limit_burst: AtLeastOne = 30
    # --- result thumbnails
    # A random per-process secret (when empty) keeps thumbnails working for one process;
    # set GATEWAY_THUMBNAIL_SECRET when several gateway replicas serve one site.
    thumbnail_secret: str = ""
    thumbnail_ttl_s: PositiveFloat = 3600.0
    thumbnail_max_side: AtLeastOne = 512
    # --- results that never rot (issue 23): each web point keeps a 256 px WebP thumbnail
    # (collections/web_thumbnails.py) in a folder of its own, or with GATEWAY_BLOBS_URL in the
    # blobs' bucket under GATEWAY_THUMBNAILS_PREFIX; off: none kept (links go to the source).
    web_thumbnails: Annotated[Literal["on", "off"], Lower] = "on"
    thumbnails_path: Path = Path("var/thumbnails")
    thumbnails_prefix: str = Field(default="thumbnails/", min_length=1)
    # The link checker (collections/link_checker.py): web URLs re-verified per minute, site-wide
    # whatever the replicas (a lease per period); 0: off. Each period checks its share, and a
    # point is checked again at most once per recheck_after.
    link_checks_per_minute: NonNegativeInt = 30
    link_check_period_s: PositiveFloat = 60.0
    link_recheck_after_s: NonNegativeFloat = 86_400.0

    @model_validator(mode="after")
    def _thumbnails_apart(self) -> GatewaySettings:
        # One namespace for both would let each collector delete the other's blobs.
        if self.thumbnails_prefix == self.blobs_prefix:
            raise ValueError("GATEWAY_THUMBNAILS_PREFIX must differ from GATEWAY_BLOBS_PREFIX (the web thumbnails "
                             "and the uploaded originals are collected apart)")
        if self.thumbnails_path.absolute() == self.blobs_path.absolute():
            raise ValueError("GATEWAY_THUMBNAILS_PATH must differ from GATEWAY_BLOBS_PATH (the web thumbnails "
                             "and the uploaded originals are collected apart)")
        return self

    # --- the gallery (search_gateway/gallery/): every image a web search embedded, kept
    # per model and weights, searched first. An embedded store in a folder by default,
    # or a Qdrant server (then no folder is used).
    gallery: Annotated[Literal["on", "off"], Lower] = "on"
    gallery_path: Path = Path("var/gallery")
    gallery_url: str = ""
    gallery_api_key: SecretStr | None = None
    # Exact (brute-force) search by default: measured 2.4 ms p50 at 10k points (numpy
    # 15 ms at 100k) with recall 1.0, while HNSW at ef=128 recalled poorly on our
    # measurements and its build holds the GIL (the embedded store runs it in a child
    # process, and the space is unavailable meanwhile). Turn HNSW on past ~100k points.
    gallery_exact: bool = True
    # How positive / negative marks refine a search (search/refine.py METHODS); the default
    # won the measurement in docs/benchmarks.md "Relevance feedback".
    refine_method: Literal["rocchio", "average_vector", "best_score", "feedback_naive"] = "rocchio"
    gallery_hnsw_ef: AtLeastOne = 128
    # Points waiting for the background writer; past it new sightings are dropped (counted).
    gallery_write_queue: AtLeastOne = 5000
    # First wait before a failed gallery write (doubling, 4 attempts), and between tries
    # to open a store that was unreachable.
    gallery_retry_s: PositiveFloat = 2.0
    # --- private collections (collections/records.py): uploaded originals kept once by SHA-256
    # in a folder, or an S3-compatible bucket when GATEWAY_BLOBS_URL is set.
    blobs_path: Path = Path("var/blobs")
    blobs_url: str = ""
    blobs_bucket: str = ""
    blobs_region: str = "us-east-1"
    blobs_prefix: str = "blobs/"
    # Per bucket call: a stalled endpoint holds an upload at most about attempts x (connect + read).
    blobs_connect_timeout_s: PositiveFloat = 3.0
    blobs_read_timeout_s: PositiveFloat = 20.0
    blobs_attempts: AtLeastOne = 3
    # Bytes nothing refers to are kept this long (an upload in progress looks like that: its
    # bytes land a few store writes before its record, seconds, so minutes are ample).
    blobs_gc_grace_s: NonNegativeFloat = 600.0
    # An original deleted with its last image goes at once unless (re)written this recently:
    # an upload of the same picture may be under way; those bytes are the collector's.
    blobs_release_grace_s: NonNegativeFloat = 60.0
    # How often the gateway collects those (blob_collector.py); 0: never (another replica does).
    blobs_gc_interval_s: NonNegativeFloat = 600.0
    # A reindex job rewrites its record this often; silent for 6 beats it reads as interrupted.
    reindex_heartbeat_s: PositiveFloat = 10.0
    # Images one tenant's collections may hold in all (0: no limit): one customer cannot fill the disks.
    tenant_max_images: NonNegativeInt = 100_000
    # Bytes of originals likewise (uploads under way and deleted ones not yet collected count).
    tenant_max_bytes: NonNegativeInt = 20 * 1024**3
    # Collections of one tenant (0: no limit).
    tenant_max_collections: NonNegativeInt = 1000
    # An upload's reservation left by a gateway that died stops counting after this long.
    quota_reservation_ttl_s: PositiveFloat = 900.0
    # Per POST /collections/{name}/images: inputs (file and url fields) and total bytes.
    collection_max_files: AtLeastOne = 100
    collection_max_bytes: AtLeastOne = 40 * 1024 * 1024
    # --- stored feedback marks (search_gateway/feedback/): POST/GET/DELETE /feedback, and the
    # boost they give later searches (search/feedback_boost.py). Off: the routes answer 404
    # feedback_off, nothing is stored and no search reads marks.
    feedback: Annotated[Literal["on", "off"], Lower] = "on"
    # Marks one tenant may keep (over the models served now); past it POST /feedback is 409.
    feedback_max_marks: AtLeastOne = 10_000
    # The boost: score += weight * (sim - threshold) / (1 - threshold) for a result marked
    # relevant for a query with cosine sim >= threshold to this one (minus for not relevant),
    # from at most feedback_boost_marks marks a search. Capped so that marks reorder near-ties
    # only (docs/benchmarks.md, "Stored feedback boost").
    feedback_boost_weight: float = Field(default=0.03, ge=0.0, le=0.05)
    # 0.95: at 0.9 the marks lowered held-out Recall@10 on Fashion-MNIST (97.1 -> 96.0-96.9).
    feedback_boost_similarity: float = Field(default=0.95, ge=0.5, lt=1.0)
    feedback_boost_marks: int = Field(default=50, ge=1, le=1000)

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in KNOWN_MODELS:
            raise ValueError(f"is not one of {', '.join(KNOWN_MODELS)}")
        return value

    @field_validator("fetch_allow")
    @classmethod
    def _allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Imported here to keep config importable on its own; the allowlist grammar
        # lives with the code that enforces it.
        from search_gateway.fetch.netguard import parse_allowlist

        try:
            parse_allowlist(value)
        except ValueError as exc:
            raise ValueError(f"is not valid: {exc}") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from search_gateway.http.access import parse_trusted_proxies

        try:
            parse_trusted_proxies(value)
        except ValueError as exc:
            raise ValueError(f"is not valid: {exc}") from None
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from search_gateway.tenants import parse_api_keys

        try:
            parse_api_keys(value, secret=b"")
        except ValueError as exc:
            raise ValueError(f"is not valid: {exc}") from None
        return value

    @field_validator("thumbnail_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return value or secrets.token_hex(32)

    @model_validator(mode="after")
    def _rules_between_settings(self) -> GatewaySettings:
        problem = client_problem("GATEWAY_", self.grpc_tls_ca_file, self.grpc_tls_cert_file, self.grpc_tls_key_file,
                                 self.grpc_tls_server_name, [("GATEWAY_EMBED_AUTH_TOKEN", self.embed_auth_token),
                                                             ("GATEWAY_SCRAPER_AUTH_TOKEN", self.scraper_auth_token)])
        if problem:
            raise ValueError(problem)
        if self.caption_mode == "remote":
            if not self.caption_url.startswith(("http://", "https://")):
                raise ValueError("GATEWAY_CAPTION_URL must be an http(s) URL when GATEWAY_CAPTION_MODE=remote")
            if not self.caption_remote_model:
                raise ValueError("GATEWAY_CAPTION_REMOTE_MODEL must name a model when GATEWAY_CAPTION_MODE=remote")
        from search_gateway.tenants import plain_keys

        if self.gallery == "on" and self.tenant_secret is None and plain_keys(self.api_keys):
            raise ValueError("GATEWAY_TENANT_SECRET must be set (a long random string, the same on every replica, "
                             "kept like the keys) when GATEWAY_API_KEYS has a plain KEY entry and the gallery is on: "
                             "it keys the hash that names the key's tenant, under which its collections are stored")
        if self.max_results > self.max_results_limit:
            raise ValueError(
                f"GATEWAY_MAX_RESULTS must be at most GATEWAY_MAX_RESULTS_LIMIT"
                f" (got {self.max_results} > {self.max_results_limit})"
            )
        return self

    @property
    def tenant_key(self) -> bytes:
        """The key of plain keys' tenant names: GATEWAY_TENANT_SECRET, else this process's own."""
        return self.tenant_secret.get_secret_value().encode() if self.tenant_secret is not None else _PROCESS_TENANT_KEY

    def _security(self, token: SecretStr | None, variable: str) -> ClientSecurity:
        return ClientSecurity(ca_file=self.grpc_tls_ca_file, cert_file=self.grpc_tls_cert_file,
                              key_file=self.grpc_tls_key_file, server_name=self.grpc_tls_server_name, token=token,
                              env_prefix="GATEWAY_", token_variable=variable)

    @property
    def embed_security(self) -> ClientSecurity:
        return self._security(self.embed_auth_token, "GATEWAY_EMBED_AUTH_TOKEN")

    @property
    def scraper_security(self) -> ClientSecurity:
        return self._security(self.scraper_auth_token, "GATEWAY_SCRAPER_AUTH_TOKEN")

"""Prometheus metrics, on a registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests_total", "HTTP requests by route and status.",
                                ("route", "method", "status"), registry=r)
        self.request_seconds = Histogram("gateway_request_seconds", "HTTP request latency by route.",
                                         ("route",), buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("gateway_search_stage_seconds", "Search pipeline stage latency.",
                                       ("stage",), buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_total = Counter("gateway_search_stage_total", "Search pipeline stages run.", ("stage",), registry=r)
        self.download_failures = Counter("gateway_download_failures_total", "Candidate downloads that failed, by reason.",
                                         ("reason",), registry=r)
        self.downloads = Counter("gateway_downloads_total", "Candidate images downloaded.", registry=r)
        self.cache_lookups = Counter("gateway_embedding_cache_lookups_total", "Embedding cache lookups.",
                                     ("result",), registry=r)
        self.searches = Counter("gateway_searches_total", "Searches by outcome (complete, partial, failed).",
                                ("outcome",), registry=r)
        self.backend_errors = Counter("gateway_backend_errors_total", "Backend calls that failed.",
                                      ("backend",), registry=r)
        self.in_flight = Gauge("gateway_searches_in_flight", "Searches running now.", registry=r)
        self.failed_download_skips = Counter(
            "gateway_failed_download_skips_total",
            "Candidates not fetched because their URL failed recently, by the remembered reason.",
            ("reason",), registry=r)
        self.failed_download_entries = Gauge("gateway_failed_download_entries",
                                             "Failed download URLs remembered now.", registry=r)
        self.slow_clients = Counter(
            "gateway_slow_client_closes_total",
            "Connections answered 408/429 and closed: header_timeout, body_timeout, too_many_connections.",
            ("kind",), registry=r)
        self.connections = Gauge("gateway_client_connections", "HTTP connections open now.", registry=r)
        self.gallery_lookups = Counter("gateway_gallery_lookups_total",
                                       "Gallery queries of searches by result (ok, unavailable).", ("result",),
                                       registry=r)
        # "written" counts points the store acknowledged (durable): a crash loses none of them.
        self.gallery_writes = Counter(
            "gateway_gallery_points_total",
            "Web images handed to the gallery's background writer, by result (written, retried, dropped).",
            ("result",), registry=r)
        self.gallery_pending = Gauge("gateway_gallery_write_pending", "Points waiting for the gallery writer.",
                                     registry=r)
        # Results that never rot (collections/web_thumbnails.py, collections/link_checker.py).
        self.thumbnail_bytes = Counter("gateway_web_thumbnail_bytes_total",
                                       "Bytes of web points' thumbnails written to the thumbnail store.", registry=r)
        self.link_checks = Counter("gateway_link_checks_total",
                                   "Web links re-verified by the link checker, by outcome (live, gone, changed, "
                                   "failed, unreachable).", ("outcome",), registry=r)
        self.stale_points = Gauge("gateway_stale_web_points",
                                  "Web points whose source is stale, as the link checker last counted (all spaces "
                                  "served).", registry=r)

    def stage(self, name: str, seconds: float) -> None:
        self.stage_seconds.labels(name).observe(seconds)
        self.stage_total.labels(name).inc()

    def download_failed(self, reason: str) -> None:
        self.download_failures.labels(reason).inc()

    def cache_lookup(self, hit: bool) -> None:
        self.cache_lookups.labels("hit" if hit else "miss").inc()

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def failed_download_skipped(self, reason: str) -> None:
        self.failed_download_skips.labels(reason).inc()

    def watch_failed_downloads(self, entries: Callable[[], int]) -> None:
        """Read the number of remembered failures at scrape time (it shrinks as entries expire)."""
        self.failed_download_entries.set_function(entries)

    # --- server.SlowClientEvents
    def slow_client(self, kind: str) -> None:
        self.slow_clients.labels(kind).inc()

    def client_connections(self, total: int) -> None:
        self.connections.set(total)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The gateway's error vocabulary, and the ONE place where errors become HTTP answers.

Core modules raise these (or plain exceptions); only :func:`to_response` decides
the status code, headers and body. Anything unexpected becomes a plain-sentence 500
with no stack trace in the body; the trace goes to the log.

A reply never carries internal detail (backend addresses, gRPC error text, exception
names, the URL a download failed on): such detail rides on the exception as
``log_detail`` and goes to ONE log line, which carries the request id that the reply
also carries.
"""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from search_gateway import requestid
from search_gateway.collections.blobs.base import BlobError, BlobUnavailable
from search_gateway.gallery.base import GalleryError, GalleryUnavailable

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base class: ``status`` is the HTTP status, ``code`` a stable machine-readable tag."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None, log_detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # For the operator, never for the reply: what exactly failed and where.
        self.log_detail = log_detail


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class MissingField(BadRequest):
    code = "missing_field"


class UnknownModel(BadRequest):
    code = "unknown_model"


class NoTextTower(BadRequest):
    code = "no_text_tower"


class RerankNeedsImage(BadRequest):
    """rerank=true with a text or like query: there is no query image to take patches of."""

    code = "rerank_needs_image"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class Conflict(GatewayError):
    status, code = 409, "conflict"


class QuotaReached(Conflict):
    """A tenant's limit (collections; images and bytes are per-image rejections instead)."""

    code = "quota_reached"


class UploadTooLarge(GatewayError):
    status, code = 413, "upload_too_large"


class NotAnImage(GatewayError):
    status, code = 415, "not_an_image"


class EmptyImage(BadRequest):
    code = "empty_image"


class BadImage(GatewayError):
    """Decodes as an image format but not as a usable picture: truncated, pixel bomb."""

    status, code = 422, "bad_image"


class TruncatedImage(BadImage):
    code = "truncated_image"


class PixelBomb(BadImage):
    code = "too_many_pixels"


class RateLimited(GatewayError):
    status, code = 429, "rate_limited"


class BackendUnavailable(GatewayError):
    """A backend is down, still warming up, overloaded or too slow."""

    status, code = 503, "backend_unavailable"

    def __init__(self, message: str, *, backend: str, retry_after: float = 2.0, log_detail: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, log_detail=log_detail)
        self.backend = backend


class DownloadFailed(GatewayError):
    """A remote image could not be fetched; ``reason`` is the metrics label."""

    status, code = 502, "download_failed"

    def __init__(self, message: str, *, reason: str, http_status: int | None = None) -> None:
        # The downloader's sentence names the URL and what went wrong with it (an
        # address, a client library's error): the log keeps it, the reply says the
        # reason in plain words.
        super().__init__(message, log_detail=message)
        self.reason = reason
        # The status the server answered, when it answered one (the link checker tells 404/410 apart).
        self.http_status = http_status


class DownloadRefused(DownloadFailed):
    """The URL or an address it resolved to is not allowed (SSRF guard)."""

    status, code = 400, "url_refused"


# What a failed download is called in a reply, by its reason label.
_DOWNLOAD_SENTENCES = {
    "bad_scheme": "Only http and https image URLs can be fetched.",
    "bad_url": "The image URL is not valid (or carries credentials).",
    "blocked_address": "The image URL points to an address that is not public; it was not fetched.",
    "timeout": "The image took too long to download.",
    "http_4xx": "The image's server refused the request or does not have it.",
    "http_5xx": "The image's server failed to send it.",
    "throttled": "The image's server asked to wait before trying again.",
    "http_other": "The image's server answered with an unexpected status.",
    "connect_error": "The image's server could not be reached.",
    "bad_redirect": "The image's server sent a broken redirect.",
    "too_many_redirects": "The image's server redirected too many times.",
    "broken_body": "The image's server sent a broken reply.",
    "too_large": "The image is larger than the download limit.",
    "encoded_body": "The image's server sent a compressed body, which is not accepted for images.",
}


def _reply_sentence(exc: GatewayError) -> str:
    if isinstance(exc, DownloadFailed):
        return _DOWNLOAD_SENTENCES.get(exc.reason, "The image could not be downloaded.")
    return exc.message


def storage_error(exc: BlobError | GalleryError) -> GatewayError:
    """What a tenant is told of the gallery store's or the blob store's failure. Their
    messages name a server address, a bucket or a key: those go to the log only."""
    if isinstance(exc, (BlobUnavailable, GalleryUnavailable)):
        # Retryable: the importer and clients back off and send again (uploads are idempotent).
        return BackendUnavailable("The image storage does not answer now; try again shortly.",
                                  backend="storage", log_detail=str(exc))
    return StorageFailed("The image storage failed; the error was logged.", log_detail=str(exc))


class StorageFailed(GatewayError):
    """The gallery or blob store refused a request it should have taken (not an outage)."""

    status, code = 500, "storage_failed"


def to_response(exc: Exception) -> Response:
    """Map any exception to a JSON answer: ``{"error": code, "detail": sentence, "request_id": id}``."""
    headers: dict[str, str] = {}
    request_id = requestid.current()
    if isinstance(exc, (BlobError, GalleryError)):
        exc = storage_error(exc)
    if isinstance(exc, GatewayError):
        status, code, detail = exc.status, exc.code, _reply_sentence(exc)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if exc.log_detail:
            level = logging.WARNING if status >= 500 else logging.INFO
            log.log(level, "request %s: %d %s: %s", request_id, status, code, exc.log_detail)
    elif isinstance(exc, HTTPException):
        # Starlette's own: 404 for unknown routes, 405, and 400 from the form parser.
        status, code, detail = exc.status_code, "http_error", str(exc.detail)
        headers.update(exc.headers or {})
    else:
        log.error("request %s: unexpected error", request_id, exc_info=exc)
        status, code, detail = 500, "internal_error", "The gateway failed unexpectedly; the error was logged."
    if request_id != "-":
        headers[requestid.HEADER] = request_id
    return JSONResponse({"error": code, "detail": detail, "request_id": request_id}, status_code=status, headers=headers)


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every route's errors come through here."""
    return to_response(exc)

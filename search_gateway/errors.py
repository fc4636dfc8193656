"""The gateway's error vocabulary, and the ONE place where errors become HTTP answers.

Core modules raise these (or plain exceptions); only :func:`to_response` decides
the status code, headers and body. Anything unexpected becomes a plain-sentence 500
with no stack trace in the body; the trace goes to the log.
"""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base class: ``status`` is the HTTP status, ``code`` a stable machine-readable tag."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class MissingField(BadRequest):
    code = "missing_field"


class UnknownModel(BadRequest):
    code = "unknown_model"


class NoTextTower(BadRequest):
    code = "no_text_tower"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class NotFound(GatewayError):
    status, code = 404, "not_found"


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

    def __init__(self, message: str, *, backend: str, retry_after: float = 2.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.backend = backend


class DownloadFailed(GatewayError):
    """A remote image could not be fetched; ``reason`` is the metrics label."""

    status, code = 502, "download_failed"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DownloadRefused(DownloadFailed):
    """The URL or an address it resolved to is not allowed (SSRF guard)."""

    status, code = 400, "url_refused"


def to_response(exc: Exception) -> Response:
    """Map any exception to a JSON answer: ``{"error": code, "detail": sentence}``."""
    headers: dict[str, str] = {}
    if isinstance(exc, GatewayError):
        status, code, detail = exc.status, exc.code, exc.message
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, HTTPException):
        # Starlette's own: 404 for unknown routes, 405, and 400 from the form parser.
        status, code, detail = exc.status_code, "http_error", str(exc.detail)
        headers.update(exc.headers or {})
    else:
        log.exception("unexpected error", exc_info=exc)
        status, code, detail = 500, "internal_error", "The gateway failed unexpectedly; the error was logged."
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every route's errors come through here."""
    return to_response(exc)

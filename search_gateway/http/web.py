"""The search page: plain HTML, CSS and JavaScript from ``static/``, served at ``/``.

No build step and nothing from another origin, so the page works offline. The page's
responses carry a strict Content-Security-Policy: scripts and styles only from this
origin (no inline code), pictures from here plus ``data:`` (the attention PNGs) and
``blob:`` (the preview of the picked file), and the web app manifest from here (the page is
installable on a phone; there is no service worker, so no API reply is ever cached by one).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).with_name("static")
# StaticFiles names the type from the extension; the system's mime.types may not know the
# manifest's (a browser then still reads it, but the standard type is this one).
mimetypes.add_type("application/manifest+json", ".webmanifest")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _WithHeaders:
    """Adds the page's security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)


async def index(request: Request) -> Response:
    # no-cache, not no-store: the browser revalidates, so a new deploy is seen at once.
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={**_HEADERS, "Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    """``/`` (the page) and ``/static/*`` (its scripts, styles, icons and manifest)."""
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/static", app=_WithHeaders(StaticFiles(directory=STATIC_DIR)), name="static"),
    ]

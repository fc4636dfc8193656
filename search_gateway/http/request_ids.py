"""The outermost middleware: each request's id (requestid.py) set around it, echoed in
the reply's ``X-Request-ID`` header, and an exception that escapes everything answered
with that id.

Apart from requestid.py, which holds the id itself (errors.py and the search read it and
import no Starlette), so that errors.py and this module import each other in one
direction only.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_gateway import requestid
from search_gateway.errors import to_response


class RequestIdMiddleware:
    """Outermost middleware: sets the id and adds it to the reply's headers.

    An exception that escapes everything inside is answered here (a 500 with the
    id), so even that reply can be traced.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                raw = value.decode("latin-1")
                break
        request_id = requestid.accept(raw)
        token = requestid.bind(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[requestid.HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            await to_response(exc)(scope, receive, send_with_id)
        finally:
            requestid.unbind(token)

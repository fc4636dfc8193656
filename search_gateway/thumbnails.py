"""Signed links to result images, so browsers can see them through the gateway.

Only URLs the gateway itself returned get a link: the token is an HMAC over the URL,
the download headers and an expiry time. Anything else is refused, so the thumbnail
route is never an open proxy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from search_gateway.errors import NotFound


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ThumbnailSigner:
    def __init__(self, secret: str, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()
        self._ttl = ttl_s
        self._clock = clock

    def sign(self, url: str, headers: dict[str, str] | None = None) -> str:
        payload = json.dumps({"u": url, "h": headers or {}, "e": int(self._clock() + self._ttl)},
                             separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return _b64(payload) + "." + _b64(mac)

    def verify(self, token: str) -> tuple[str, dict[str, str]]:
        """The URL and headers a valid, unexpired token stands for; else NotFound."""
        invalid = NotFound("This thumbnail link is unknown or has expired; search again.")
        try:
            body, mac = token.split(".", 1)
            payload = _unb64(body)
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(expected, _unb64(mac)):
                raise invalid
            data = json.loads(payload)
        except (ValueError, TypeError):
            raise invalid from None
        # A valid signature proves who wrote the payload, not its shape: a payload
        # signed with a leaked or reused secret, or by an older gateway version, is
        # checked like anything else read from outside.
        if not isinstance(data, dict):
            raise invalid
        url, headers, expires = data.get("u"), data.get("h", {}), data.get("e")
        if (not isinstance(url, str) or not url or not isinstance(headers, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
                or not isinstance(expires, int) or isinstance(expires, bool) or expires < self._clock()):
            raise invalid
        return url, headers

"""Sealed links to result images, so browsers can see them through the gateway.

Only URLs the gateway itself returned get a link: the token is the URL, the download
headers and an expiry time, encrypted and authenticated with AES-256-GCM-SIV under a key
derived from ``GATEWAY_THUMBNAIL_SECRET``. Anything else is refused, so the thumbnail
route is never an open proxy.

Why encrypted, not only signed: a link travels (browser history, logs, screenshots), and
what it stands for must not be readable from it. A private original's link names its
tenant, collection and content hash; a plain API key's tenant name is derived from the
key, and an earlier, signed-only format let anyone decode it and test guesses of the key
offline. Now a token is a nonce and ciphertext: nothing in it decodes to anything, and
it cannot be forged or altered without the secret.

Why deterministic (the nonce derived from the payload, GCM-SIV rather than GCM): one
picture's link stays the same for the second its expiry is counted in, as the signed
links were, so a page that shows a result twice (a progress event, then the final
answer) shows one URL and the browser fetches it once. GCM-SIV is built for a repeated
nonce: all it gives away is that two tokens stand for the same payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from search_gateway.errors import NotFound

_NONCE = 12
_TAG = 16
# Bound into every token (GCM's associated data): a token of another use of the same
# secret, or of a later format, never decrypts as a thumbnail link.
_CONTEXT = b"tattoo-search thumbnail link v2"
# A private collection's original: blob:<tenant>/<collection>/<sha256> (tenants.py and
# collections/records.py keep '/' out of both names).
BLOB = "blob:"

INVALID = "This thumbnail link is unknown or has expired; search again."


# A web gallery result's kept thumbnail: kept:<thumbnail sha256>:<original URL> (the URL is the
# fallback when the thumbnail is gone from the store; collections/web_thumbnails.py keeps them).
KEPT = "kept:"


def kept_url(thumbnail: str, url: str) -> str:
    return f"{KEPT}{thumbnail}:{url}"


def kept_parts(url: str) -> tuple[str, str] | None:
    """(thumbnail sha256, original URL) of a ``kept_url``; None for anything else."""
    if not url.startswith(KEPT):
        return None
    sha256, _, original = url[len(KEPT):].partition(":")
    return (sha256, original) if len(sha256) == 64 and original else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def blob_url(tenant: str, collection: str, sha256: str) -> str:
    """What a private original's link stands for: the image record (tenant, collection,
    content), so the route can ask whether that record still exists."""
    return f"{BLOB}{tenant}/{collection}/{sha256}"


def blob_parts(url: str) -> tuple[str, str, str] | None:
    """(tenant, collection, sha256) of a ``blob_url``; None for anything else."""
    parts = url[len(BLOB):].split("/") if url.startswith(BLOB) else []
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


class ThumbnailSigner:
    def __init__(self, secret: str, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        # A key of its own (not the secret itself), so that the secret can key other
        # things without two uses ever sharing a key.
        self._aead = AESGCMSIV(hashlib.sha256(b"thumbnail-links\0" + secret.encode()).digest())
        self._nonce_key = hashlib.sha256(b"thumbnail-link-nonces\0" + secret.encode()).digest()
        self._ttl = ttl_s
        self._clock = clock

    def sign(self, url: str, headers: dict[str, str] | None = None) -> str:
        payload = json.dumps({"u": url, "h": headers or {}, "e": int(self._clock() + self._ttl)},
                             separators=(",", ":"), sort_keys=True).encode()
        return self.seal(payload)

    def seal(self, payload: bytes) -> str:
        """A token carrying ``payload`` (bytes as given: the tests forge malformed ones)."""
        # Synthetic: the same payload gets the same nonce, hence the same token (see the docstring).
        nonce = hmac.new(self._nonce_key, payload, hashlib.sha256).digest()[:_NONCE]
        return _b64(nonce + self._aead.encrypt(nonce, payload, _CONTEXT))

    def verify(self, token: str) -> tuple[str, dict[str, str]]:
        """The URL and headers a valid, unexpired token stands for; else NotFound."""
        invalid = NotFound(INVALID)
        try:
            raw = _unb64(token)
            if len(raw) < _NONCE + _TAG:
                raise invalid
            data = json.loads(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT))
        except (ValueError, TypeError, InvalidTag):
            raise invalid from None
        # A valid tag proves who wrote the payload, not its shape: a payload sealed with a
        # leaked or reused secret, or by an older gateway version, is checked like
        # anything else read from outside.
        if not isinstance(data, dict):
            raise invalid
        url, headers, expires = data.get("u"), data.get("h", {}), data.get("e")
        if (not isinstance(url, str) or not url or not isinstance(headers, dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
                or not isinstance(expires, int) or isinstance(expires, bool) or expires < self._clock()):
            raise invalid
        return url, headers

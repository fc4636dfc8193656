"""``query_ref``: what a search hands its caller so that a later ``POST /feedback`` can
say which query a mark is for, with no state kept by the gateway.

A token is the query's unit vector quantised to int8 (one byte a dimension: 512 bytes for
squeezenet), the model, its weights fingerprint and the caller's tenant, encrypted and
authenticated with AES-256-GCM-SIV under a key derived from ``GATEWAY_THUMBNAIL_SECRET``
(the secret the thumbnail links use, under another label, so no two uses share a key).

Why so: every gateway replica opens any replica's token (same secret), nothing is kept per
search (a search costs no store write), a token cannot be forged or altered (the tag), and
it reads as nothing (a vector of the caller's query image is the caller's business). Why
int8: a 512-d float32 vector would make each token 2.7 KB of base64 (int8: about 730 bytes);
the dequantised vector, renormalised, keeps a cosine to the original of 0.99995 for
Gaussian-like 512-d vectors and 0.9996 for heavy-tailed ones (the worst of 200 random
vectors each), far finer than the boost's similarity threshold (0.95). No expiry: a mark is about a query, whenever it is sent;
a token of older weights is refused by the route (409), since the vector means nothing in
the new space.

A token sealed for one tenant is refused for another exactly as a forged one is (the
same 404): another tenant cannot tell a foreign token from garbage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from search_gateway.gallery.base import VectorSpace

_NONCE = 12
_TAG = 16
# Bound into every token: a token of another use of the secret never opens as a query_ref.
_CONTEXT = b"tattoo-search query ref v1"
# The longest token accepted (a 4096-d vector and its header fit with room to spare).
MAX_LENGTH = 8192


class UnknownQueryRef(ValueError):
    """Not a query_ref this service issued to this tenant (forged, altered, another tenant's)."""


@dataclass(frozen=True)
class QueryRef:
    tenant: str
    model: str
    # None when the search's embed reply named no weights: no mark can be kept for it.
    space: VectorSpace | None
    # The dequantised query vector, unit length.
    vector: np.ndarray
    # The query's identity: equal for one query (same vector bytes, same space), whatever
    # search or replica issued the token; mark ids are derived from it.
    digest: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def quantised(vector: np.ndarray) -> bytes:
    """int8 bytes of ``vector`` scaled so its largest component is 127."""
    v = np.asarray(vector, dtype=np.float32).ravel()
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if not np.isfinite(peak) or peak == 0.0:
        return bytes(v.size)
    return bytes(np.clip(np.rint(v / peak * 127.0), -127, 127).astype(np.int8).tobytes())


def dequantised(raw: bytes) -> np.ndarray:
    v = np.frombuffer(raw, dtype=np.int8).astype(np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class QueryRefs:
    def __init__(self, secret: str) -> None:
        self._aead = AESGCMSIV(hashlib.sha256(b"query-refs\0" + secret.encode()).digest())

    def issue(self, tenant: str, model: str, space: VectorSpace | None, vector: np.ndarray) -> str:
        header = {"t": tenant, "m": model, "f": space.weights_fingerprint if space else "",
                  "d": int(np.asarray(vector).size)}
        payload = json.dumps(header, separators=(",", ":"), sort_keys=True).encode() + b"\n" + quantised(vector)
        # A random nonce: GCM-SIV stays safe even if two ever repeat.
        nonce = os.urandom(_NONCE)
        return _b64(nonce + self._aead.encrypt(nonce, payload, _CONTEXT))

    def open(self, token: str, tenant: str) -> QueryRef:
        """The query ``token`` stands for; UnknownQueryRef unless this service issued it to ``tenant``."""
        try:
            raw = _unb64(token)
            if len(raw) < _NONCE + _TAG:
                raise UnknownQueryRef
            payload = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT)
            text, _, vector = payload.partition(b"\n")
            header = json.loads(text)
        except (ValueError, TypeError, InvalidTag):
            raise UnknownQueryRef from None
        # A valid tag proves who sealed it, not its shape: checked like anything from outside.
        if not isinstance(header, dict):
            raise UnknownQueryRef
        owner, model, fingerprint, dimension = header.get("t"), header.get("m"), header.get("f"), header.get("d")
        if (not isinstance(owner, str) or not isinstance(model, str) or not model or not isinstance(fingerprint, str)
                or not isinstance(dimension, int) or isinstance(dimension, bool) or dimension != len(vector)
                or not 1 <= dimension <= 65_536):
            raise UnknownQueryRef
        if owner != tenant:
            raise UnknownQueryRef
        space = VectorSpace(model, fingerprint, dimension) if fingerprint else None
        digest = hashlib.sha256(f"{model}\0{fingerprint}\0".encode() + vector).hexdigest()
        return QueryRef(owner, model, space, dequantised(vector), digest)

"""A file's content hash, streamed: the gateway keys an uploaded image by the SHA-256 of
the uploaded bytes (search_gateway/fetch/images.py content_hash), so the same hash of the same
bytes says whether the collection holds it already."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bulk_importer.formats import HEAD

_CHUNK = 1024 * 1024


def sha256_of(path: Path) -> tuple[str, bytes]:
    """The hex SHA-256 of the file's bytes and its first bytes (for the format check)."""
    digest = hashlib.sha256()
    head = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if not head:
                head = chunk[:HEAD]
            digest.update(chunk)
    return digest.hexdigest(), head

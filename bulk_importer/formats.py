"""Whether a file's first bytes are one of the formats the gateway takes
(search_gateway/fetch/images.py ALLOWED_FORMATS: JPEG, PNG, WEBP, GIF, BMP).

Checked while hashing (the bytes are read anyway), so that the sidecar files of a
photo folder (.xmp, .psd, .pdf, Thumbs.db) are reported rejected without being
uploaded on every run. Only the signature: a truncated or corrupt image is sent and
the gateway says what is wrong with it.
"""

from __future__ import annotations

HEAD = 12
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
NOT_AN_IMAGE = "Not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP); not sent."


def is_image(head: bytes) -> bool:
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")

"""The blob store's narrow interface: uploaded originals kept once, addressed by SHA-256.

A URL can be fetched again; an uploaded file cannot. So each original a studio uploads
is kept here, once, under the hex SHA-256 of its bytes: the same picture in two
collections is one blob, thumbnails can be drawn from it, and a collection can be
embedded again with another model or other weights without a new upload. Two
implementations: ``local.py`` (files in a folder, ``var/blobs`` by default) and
``s3.py`` (an S3-compatible bucket, for several machines); ``factory.open_blob_store``
picks one and the contract tests in ``tests/search_gateway/collections/blobs/contract.py`` hold for both.

Consistency between the blob store and the gallery (vector points), which cannot be
written in one transaction:

* **Write order: bytes first, then the point.** ``writes.put_then_index`` stores the
  blob, then writes the point, then checks the blob is still there (and stores it
  again if a collection raced it away, see below). A crash between the two writes
  leaves bytes without a point, never a point without bytes.
* **A point is visible only once its bytes exist**: that follows from the order above.
  A reader that still finds a point whose blob is missing (the rare race below, or an
  operator deleting files by hand) treats it as absent and reports it for removal; it
  never serves it.
* **Garbage collection** (``gc.collect_garbage``) deletes blobs that no point
  references AND whose modification time is older than a grace period, checking the
  age once more right before each delete. ``put`` of a blob that is already stored
  refreshes its modification time, so an upload in progress (bytes written, point not
  yet) is young and never collected, even when it re-uses bytes that had lost their
  last reference long ago. Bytes that nothing refers to live at most one grace period
  plus one collection interval.
* **Deleting a picture from its last collection** deletes the point first, then calls
  ``gc.release``, which deletes the blob at once unless another point references it or
  it was (re)written within the grace period (then the next collection takes it).

The one race left: a collection that passed its last age check and an upload that
re-writes the same bytes in the few milliseconds before the delete. ``put_then_index``
checks after writing the point and stores the bytes again; only if the delete also
lands after that check is a point left without bytes, which readers skip (above).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

# Lower-case hex only: one spelling per picture, and safe as a file name and an S3 key.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BlobError(Exception):
    """Base of the blob store's errors; the message is a sentence for the operator."""


class BlobNotFound(BlobError):
    """No blob is stored under this hash."""


class BlobUnavailable(BlobError):
    """The store cannot answer now (endpoint unreachable, throttled, disk full): retry later."""


class BlobRejected(BlobError):
    """The caller's input is wrong (a malformed hash, bytes that do not hash to it): do not retry."""


def check_sha256(sha256: str) -> str:
    """The hash itself, or ``BlobRejected`` saying what a valid one looks like."""
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        shown = repr(sha256)[:80]
        raise BlobRejected(f"a blob is addressed by 64 lower-case hex digits of SHA-256, got {shown}")
    return sha256


def is_sha256(name: str) -> bool:
    """Whether a file or key name is a blob's hash (temporary files and foreign keys are not)."""
    return bool(_SHA256_HEX.fullmatch(name))


@dataclass(frozen=True)
class BlobRef:
    """What ``put`` stored: the blob's address, its size and the content type given."""

    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class BlobEntry:
    """One stored blob as a listing sees it; ``modified`` is timezone-aware (UTC)."""

    sha256: str
    size: int
    modified: datetime


@runtime_checkable
class BlobStore(Protocol):
    """Put, get, exists, stat, delete, list: nothing else crosses this line.

    Every method is async and never blocks the event loop. Every hash argument is
    checked (``BlobRejected`` when malformed).
    """

    async def put(self, sha256: str, data: bytes, content_type: str) -> BlobRef:
        """Store ``data`` under ``sha256`` once; durable when it returns.

        Refuses (``BlobRejected``) bytes that do not hash to ``sha256``. Putting a hash
        that is already stored writes nothing new but refreshes its modification time
        (see the module docstring: that keeps an upload in progress from being collected).
        """

    async def get(self, sha256: str) -> bytes:
        """The bytes, or ``BlobNotFound``."""

    async def exists(self, sha256: str) -> bool: ...

    async def stat(self, sha256: str) -> BlobEntry | None:
        """Size and modification time, or None when not stored."""

    async def delete(self, sha256: str) -> None:
        """Remove the blob; an unknown hash is ignored."""

    def entries(self) -> AsyncIterator[BlobEntry]:
        """Every stored blob with its modification time, in no particular order."""

    def list_older_than(self, cutoff: datetime) -> AsyncIterator[BlobEntry]:
        """The blobs last modified before ``cutoff`` (timezone-aware)."""

    async def sweep_partial(self, cutoff: datetime) -> int:
        """Remove leftovers of writes interrupted before ``cutoff``; how many were removed."""

    async def close(self) -> None: ...

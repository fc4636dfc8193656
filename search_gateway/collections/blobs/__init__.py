"""The blob store: each uploaded original kept once, addressed by its SHA-256.

``base`` defines the interface and the consistency design with the gallery, ``local``
(a folder, default) and ``s3`` (an S3-compatible bucket) implement it,
``factory.open_blob_store`` picks one, ``writes.put_then_index`` is the write order and
``gc`` collects bytes that no point refers to.
"""

from search_gateway.collections.blobs.base import (
    BlobEntry,
    BlobError,
    BlobNotFound,
    BlobRef,
    BlobRejected,
    BlobStore,
    BlobUnavailable,
    check_sha256,
)
from search_gateway.collections.blobs.factory import open_blob_store
from search_gateway.collections.blobs.gc import Collected, collect_garbage, release
from search_gateway.collections.blobs.writes import put_then_index

__all__ = [
    "BlobEntry",
    "BlobError",
    "BlobNotFound",
    "BlobRef",
    "BlobRejected",
    "BlobStore",
    "BlobUnavailable",
    "Collected",
    "check_sha256",
    "collect_garbage",
    "open_blob_store",
    "put_then_index",
    "release",
]

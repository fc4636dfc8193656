"""Open the blob store the settings ask for: a local folder or an S3-compatible bucket."""

from __future__ import annotations

import os

from search_gateway.collections.blobs.base import BlobStore


async def open_blob_store(
    *,
    path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    bucket: str = "",
    region: str = "us-east-1",
    prefix: str = "blobs/",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    connect_timeout_s: float = 3.0,
    read_timeout_s: float = 20.0,
    attempts: int = 3,
) -> BlobStore:
    """Exactly one of ``path`` (a folder, ``var/blobs`` in the gateway's defaults) or ``url``
    (an S3-compatible endpoint, with ``bucket``).

    Credentials are the caller's settings, or None: then boto3 reads the standard AWS_*
    variables. Raises ``BlobUnavailable`` for an endpoint that does not answer and
    ``BlobError`` for a missing bucket, refused credentials or an unusable folder.
    """
    if (path is None) == (url is None):
        raise ValueError("open the blob store with exactly one of a folder path or an S3 URL")
    if url is not None:
        # Imported here so a single-machine deployment never loads boto3.
        from search_gateway.collections.blobs.s3 import S3BlobStore, S3Settings

        return await S3BlobStore.open(S3Settings(
            url=url, bucket=bucket, region=region, prefix=prefix, access_key_id=access_key_id,
            secret_access_key=secret_access_key, connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s, attempts=attempts,
        ))
    assert path is not None
    from search_gateway.collections.blobs.local import LocalBlobStore

    return await LocalBlobStore.open(path)

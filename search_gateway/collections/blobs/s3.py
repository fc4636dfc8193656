"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...), for several machines.

Through boto3, the AWS SDK: maintained by AWS and the one every S3-compatible server
tests against. It is synchronous, so each call runs on a worker thread (a boto3 client
is thread-safe; its session is only used here, at open). Keys are
``<prefix>ab/cd/<sha256>`` so a listing can be split by prefix later. Every call has a
connect and a read timeout and a bounded number of retries, so an unreachable endpoint
answers ``BlobUnavailable`` naming the URL instead of hanging.

Credentials are never written here: the caller passes them from its settings, or
leaves them out and boto3 reads the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) and its usual chain.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from search_gateway.collections.blobs.base import (
    BlobEntry,
    BlobError,
    BlobNotFound,
    BlobRef,
    BlobRejected,
    BlobUnavailable,
    check_sha256,
    is_sha256,
)

T = TypeVar("T")
# The server's answers that mean "not now" rather than "never".
_RETRYABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                              "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "503", "500"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Settings:
    """Where the bucket is and how long to wait for it; credentials only when given."""

    url: str
    bucket: str
    region: str = "us-east-1"
    prefix: str = "blobs/"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 20.0
    # Total attempts per call, the first included (botocore's "standard" retry mode).
    attempts: int = 3

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the blob store URL must be http(s)://host[:port], got {self.url!r}")
        if not self.bucket:
            raise ValueError("the blob store needs a bucket name")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both an access key id and a secret access key, or neither (then the AWS_* variables)")
        if self.attempts < 1:
            raise ValueError("the blob store needs at least one attempt per call")


class S3BlobStore:
    """A :class:`~search_gateway.collections.blobs.base.BlobStore` over one bucket and key prefix."""

    def __init__(self, settings: S3Settings, client: Any) -> None:
        self.settings = settings
        self._client = client
        self._where = f"bucket {settings.bucket!r} at {settings.url}"

    @classmethod
    async def open(cls, settings: S3Settings) -> S3BlobStore:
        """A store whose bucket answered; ``BlobUnavailable`` when the endpoint does not,
        ``BlobError`` when the bucket is missing or the credentials are refused."""
        client = await asyncio.to_thread(_client, settings)
        store = cls(settings, client)
        try:
            await store._call(lambda: client.head_bucket(Bucket=settings.bucket))
        except BlobNotFound:
            client.close()
            raise BlobError(f"the {store._where} does not exist; create it first") from None
        except BaseException:
            client.close()
            raise
        return store

    def key_of(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self.settings.prefix}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    async def put(self, sha256: str, data: bytes, content_type: str) -> BlobRef:
        key = self.key_of(sha256)
        actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if actual != sha256:
            raise BlobRejected(f"the bytes hash to {actual}, not to the {sha256} they were stored under")
        if await self.stat(sha256) is not None:
            # Stored already: copy it onto itself, which only renews its LastModified
            # (see base.py: an upload in progress must look young to the collector).
            await self._call(lambda: self._client.copy_object(
                Bucket=self.settings.bucket, Key=key, CopySource={"Bucket": self.settings.bucket, "Key": key},
                MetadataDirective="REPLACE", ContentType=content_type))
        else:
            await self._call(lambda: self._client.put_object(
                Bucket=self.settings.bucket, Key=key, Body=data, ContentType=content_type,
                ChecksumAlgorithm="SHA256"))
        return BlobRef(sha256=sha256, size=len(data), content_type=content_type)

    async def get(self, sha256: str) -> bytes:
        key = self.key_of(sha256)

        def read() -> bytes:
            reply = self._client.get_object(Bucket=self.settings.bucket, Key=key)
            with reply["Body"] as body:
                data: bytes = body.read()
                return data

        try:
            return await self._call(read)
        except BlobNotFound:
            raise BlobNotFound(f"no blob {sha256} in the {self._where}") from None

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def stat(self, sha256: str) -> BlobEntry | None:
        key = self.key_of(sha256)
        try:
            head = await self._call(lambda: self._client.head_object(Bucket=self.settings.bucket, Key=key))
        except BlobNotFound:
            return None
        return BlobEntry(sha256, int(head["ContentLength"]), _utc(head["LastModified"]))

    async def delete(self, sha256: str) -> None:
        key = self.key_of(sha256)
        await self._call(lambda: self._client.delete_object(Bucket=self.settings.bucket, Key=key))

    async def entries(self) -> AsyncIterator[BlobEntry]:
        # One page (up to 1,000 keys) per worker hop, so a huge bucket streams.
        token: str | None = None
        while True:
            arguments: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": self.settings.prefix}
            if token:
                arguments["ContinuationToken"] = token
            page = await self._call(partial(self._client.list_objects_v2, **arguments))
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if is_sha256(name) and item["Key"] == self.key_of(name):
                    yield BlobEntry(name, int(item["Size"]), _utc(item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def list_older_than(self, cutoff: datetime) -> AsyncIterator[BlobEntry]:
        async for entry in self.entries():
            if entry.modified < cutoff:
                yield entry

    async def sweep_partial(self, cutoff: datetime) -> int:
        # Each blob is one PUT (never multipart), which S3 makes visible whole or not at all.
        return 0

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def _call(self, call: Callable[[], T]) -> T:
        """Run one SDK call on a worker thread, its failures as this package's errors."""
        try:
            return await asyncio.to_thread(call)
        except ClientError as exc:
            raise self._client_error(exc) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise BlobUnavailable(f"the blob store at {self.settings.url} cannot be reached ({exc}); "
                                  "retry later") from exc
        except NoCredentialsError as exc:
            # boto3's own "Unable to locate credentials" does not say where the gateway
            # looks: it has no setting of its own for them, only boto3's chain.
            raise BlobError(f"the {self._where} needs credentials and none were found: set AWS_ACCESS_KEY_ID "
                            "and AWS_SECRET_ACCESS_KEY (or another source boto3 reads)") from exc
        except BotoCoreError as exc:
            raise BlobError(f"the {self._where} failed: {exc}") from exc

    def _client_error(self, exc: ClientError) -> BlobError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES or code == "NoSuchBucket":
            if code == "NoSuchBucket":
                return BlobError(f"the {self._where} does not exist; create it first")
            return BlobNotFound(f"not found in the {self._where}")
        if code in _RETRYABLE_CODES or status >= 500 or status == 429:
            return BlobUnavailable(f"the {self._where} is unavailable now ({code or status}); retry later")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return BlobError(f"the {self._where} refused our credentials ({code}); check the access key")
        return BlobError(f"the {self._where} answered {code or status}: {error.get('Message', '')}".rstrip(": "))


def _client(settings: S3Settings) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        region_name=settings.region,
    )
    return session.client(
        "s3",
        endpoint_url=settings.url,
        config=Config(
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            retries={"max_attempts": settings.attempts, "mode": "standard"},
            # Path-style (http://host/bucket/key): what MinIO and most S3-compatible servers expect.
            s3={"addressing_style": "path"},
            # Checksums only where asked (put_object above): some S3-compatible servers
            # refuse the newer default trailing checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)

"""The S3 blob store: the contract against moto's S3 server started on loopback, and
against a real S3-compatible endpoint when BLOBS_S3_URL (and BLOBS_S3_BUCKET, with
credentials in the standard AWS_* variables) name one."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from search_gateway.collections.blobs import BlobError, BlobStore, BlobUnavailable, open_blob_store
from search_gateway.collections.blobs.s3 import S3BlobStore, S3Settings
from tests.search_gateway.collections.blobs.contract import BlobStoreContract, blob
from tests.support.moto_s3 import create_bucket, moto_client, moto_endpoint, start_moto

BUCKET = "tattoo-blobs"
# moto accepts any credentials; these exist only in this test.
MOTO_KEYS: dict[str, Any] = {"access_key_id": "testing", "secret_access_key": "testing"}
REAL_URL = os.environ.get("BLOBS_S3_URL", "")
REAL_BUCKET = os.environ.get("BLOBS_S3_BUCKET", "")
REAL_REGION = os.environ.get("BLOBS_S3_REGION", "us-east-1")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = start_moto()
    url = moto_endpoint(server)
    create_bucket(url, BUCKET)
    try:
        yield url
    finally:
        server.stop()


class _ScopedStore(S3BlobStore):
    """Each test gets its own key prefix and deletes what it left there when closed."""

    async def close(self) -> None:
        try:
            async for entry in self.entries():
                await self.delete(entry.sha256)
        finally:
            await super().close()


class TestMotoBlobStore(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _url(self, moto_url: str) -> None:
        self.url = moto_url

    async def make_store(self, tmp_path: Path) -> BlobStore:
        settings = S3Settings(url=self.url, bucket=BUCKET, prefix=f"test-{uuid.uuid4().hex[:12]}/", **MOTO_KEYS)
        return await _ScopedStore.open(settings)

    async def backdate(self, store: BlobStore, sha256: str, seconds: float) -> None:
        # No S3 call sets LastModified, but moto's server runs in this process.
        assert isinstance(store, S3BlobStore)
        key = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(BUCKET, store.key_of(sha256))
        assert key is not None
        key.last_modified -= timedelta(seconds=seconds)


@pytest.mark.skipif(not (REAL_URL and REAL_BUCKET),
                    reason="set BLOBS_S3_URL and BLOBS_S3_BUCKET (credentials in AWS_*) to run the contract "
                           "against a real S3-compatible endpoint")
class TestRealBlobStore(BlobStoreContract):
    async def make_store(self, tmp_path: Path) -> BlobStore:
        settings = S3Settings(url=REAL_URL, bucket=REAL_BUCKET, region=REAL_REGION,
                              prefix=f"test-{uuid.uuid4().hex[:12]}/")
        return await _ScopedStore.open(settings)

    async def backdate(self, store: BlobStore, sha256: str, seconds: float) -> None:
        pytest.skip("a real endpoint cannot make a blob look older")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_unreachable_endpoint_is_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BlobUnavailable, match=f"blob store at {url} cannot be reached"):
        await open_blob_store(url=url, bucket=BUCKET, connect_timeout_s=1, read_timeout_s=1, attempts=1,
                              **MOTO_KEYS)


async def test_endpoint_that_never_answers_times_out_as_unavailable() -> None:
    # Accepts the connection, never replies: only the read timeout ends the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(BlobUnavailable, match=f"blob store at {url} cannot be reached"):
            await open_blob_store(url=url, bucket=BUCKET, connect_timeout_s=1, read_timeout_s=1, attempts=1,
                                  **MOTO_KEYS)


async def test_endpoint_going_away_after_open_is_unavailable() -> None:
    server = start_moto()
    url = moto_endpoint(server)
    create_bucket(url, "short-lived")
    store = await S3BlobStore.open(S3Settings(url=url, bucket="short-lived", connect_timeout_s=1,
                                              read_timeout_s=1, attempts=1, **MOTO_KEYS))
    try:
        server.stop()
        sha, data = blob(1)
        with pytest.raises(BlobUnavailable, match=f"blob store at {url} cannot be reached"):
            await store.put(sha, data, "image/png")
        with pytest.raises(BlobUnavailable, match=f"blob store at {url} cannot be reached"):
            await store.get(sha)
    finally:
        await store.close()


async def test_missing_bucket_is_an_error_naming_it(moto_url: str) -> None:
    with pytest.raises(BlobError, match="bucket 'no-such-bucket' at .* does not exist"):
        await open_blob_store(url=moto_url, bucket="no-such-bucket", **MOTO_KEYS)


async def test_keys_are_fanned_out_under_the_prefix_and_carry_the_content_type(moto_url: str) -> None:
    store = await S3BlobStore.open(S3Settings(url=moto_url, bucket=BUCKET, prefix="layout/", **MOTO_KEYS))
    try:
        sha, data = blob(1)
        await store.put(sha, data, "image/webp")
        client = moto_client(moto_url)
        head = client.head_object(Bucket=BUCKET, Key=f"layout/{sha[:2]}/{sha[2:4]}/{sha}")
        client.close()
        assert head["ContentType"] == "image/webp" and head["ContentLength"] == len(data)
        await store.delete(sha)
    finally:
        await store.close()


async def test_foreign_keys_under_the_prefix_are_not_listed(moto_url: str) -> None:
    client = moto_client(moto_url)
    client.put_object(Bucket=BUCKET, Key="foreign/readme.txt", Body=b"hello")
    client.put_object(Bucket=BUCKET, Key="foreign/" + "a" * 64, Body=b"not in a fan-out folder")
    client.close()
    store = await S3BlobStore.open(S3Settings(url=moto_url, bucket=BUCKET, prefix="foreign/", **MOTO_KEYS))
    try:
        assert [e async for e in store.entries()] == []
    finally:
        await store.close()


def test_settings_refuse_half_credentials_and_non_http_urls() -> None:
    with pytest.raises(ValueError, match="both an access key id and a secret"):
        S3Settings(url="http://s3.local", bucket="b", access_key_id="only-one")
    with pytest.raises(ValueError, match="http"):
        S3Settings(url="s3.local:9000", bucket="b")

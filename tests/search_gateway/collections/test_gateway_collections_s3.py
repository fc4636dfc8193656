"""Private collections end to end with the originals in an S3-compatible bucket: moto's
S3 server on loopback (as tests/search_gateway/collections/blobs/test_s3_blobs.py), real embed and scraper
servers, the embedded gallery store, and the gateway under uvicorn with
GATEWAY_BLOBS_URL pointing at the bucket. The bucket is read with boto3 directly.
The upload-to-reindex round trip also runs against a real bucket when BLOBS_S3_URL and
BLOBS_S3_BUCKET name one (as the blob store's contract tests do).

Credentials reach the gateway the one way it has: boto3's standard AWS_* variables
(the gateway has no settings of its own for them, see blobs/s3.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from PIL import Image

from tests.support.background import BackgroundServer
from tests.support.collections_support import A, CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg
from tests.support.moto_s3 import MOTO_KEYS, moto_endpoint, start_moto
from tests.support.polling import until

# Slow: a moto S3 server per module and a gateway per test over it; the blob store's own
# contract against moto (collections/blobs/test_s3_blobs.py) stays in `make test-fast`.
pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
# A real S3-compatible endpoint for the end-to-end test, as tests/search_gateway/collections/blobs/test_s3_blobs.py
# takes it (credentials in the standard AWS_* variables, for the gateway and this test).
REAL_URL = os.environ.get("BLOBS_S3_URL", "")
REAL_BUCKET = os.environ.get("BLOBS_S3_BUCKET", "")
REAL_REGION = os.environ.get("BLOBS_S3_REGION", "us-east-1")


@dataclass(frozen=True)
class Bucket:
    """Where the gateway keeps its originals in one test: endpoint, bucket, key prefix."""

    url: str
    name: str
    prefix: str = "originals/"
    region: str = "us-east-1"
    keys: tuple[tuple[str, str], ...] = tuple(MOTO_KEYS.items())  # empty: the AWS_* variables

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name=self.region, **dict(self.keys),
                            config=Config(s3={"addressing_style": "path"}))

    def objects(self) -> dict[str, bytes]:
        """Every object under the gateway's prefix, with its bytes, read past the gateway."""
        client = self.client()
        try:
            listed = client.list_objects_v2(Bucket=self.name, Prefix=self.prefix).get("Contents", [])
            return {o["Key"]: client.get_object(Bucket=self.name, Key=o["Key"])["Body"].read() for o in listed}
        finally:
            client.close()

    def key(self, picture: bytes) -> str:
        sha256 = hashlib.sha256(picture).hexdigest()
        return f"{self.prefix}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def settings(self, embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path) -> Any:
        # blobs_path stays set (collection_settings gives one): the URL must win over it.
        # Two attempts of a 1 s connect: the outage cases answer in seconds, not botocore's default minute.
        return _settings(embed, scraper, site, tmp, blobs_url=self.url, blobs_bucket=self.name,
                         blobs_region=self.region, blobs_prefix=self.prefix, blobs_attempts=2,
                         blobs_connect_timeout_s=1.0)


def _new_bucket(url: str) -> Bucket:
    """A moto bucket of the test's own: moto keeps every server's buckets in one process-wide state."""
    bucket = Bucket(url, f"gw-{uuid.uuid4().hex[:16]}")
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    client.close()
    return bucket


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = start_moto()
    try:
        yield moto_endpoint(server)
    finally:
        server.stop()


@pytest.fixture
def moto_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # What an operator exports for the gateway; no profile or file of this machine may interfere.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", MOTO_KEYS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MOTO_KEYS["aws_secret_access_key"])
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(params=["moto", "real"])
def bucket(request: pytest.FixtureRequest) -> Iterator[Bucket]:
    """moto's bucket always; the real one when BLOBS_S3_URL and BLOBS_S3_BUCKET name it,
    under a prefix of this run's own that is emptied afterwards."""
    if request.param == "moto":
        request.getfixturevalue("moto_credentials")
        yield _new_bucket(request.getfixturevalue("moto_url"))
        return
    if not (REAL_URL and REAL_BUCKET):
        pytest.skip("set BLOBS_S3_URL and BLOBS_S3_BUCKET (credentials in AWS_*) to run it against a real bucket")
    real = Bucket(REAL_URL, REAL_BUCKET, prefix=f"gateway-test-{uuid.uuid4().hex[:12]}/", region=REAL_REGION,
                  keys=())
    try:
        yield real
    finally:
        client = real.client()
        for key in real.objects():
            client.delete_object(Bucket=real.name, Key=key)
        client.close()


async def test_collections_keep_their_originals_in_the_bucket_from_upload_to_reindex(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path, bucket: Bucket) -> None:
    pictures = [jpeg(120 + i, (260 + 12 * i, 220)) for i in range(3)]
    async with aiohttp.ClientSession() as http, run_gateway(bucket.settings(embed, scraper, site, tmp_path)) as gw:
        c = CollectionsClient(http, gw)
        assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
        assert (await c.call("POST", "/collections", json={"name": "sheet"}))[0] == 201

        # Three uploads: three objects, each under its content hash, holding the bytes sent.
        ids = await c.added("flash", pictures, "clip")
        stored = bucket.objects()
        assert stored == {bucket.key(p): p for p in pictures}
        assert not (tmp_path / "blobs").exists()  # nothing went to the local folder instead

        # The same picture in a second collection is a second image, not a second object.
        (again,) = await c.added("sheet", [pictures[0]], "clip")
        assert bucket.objects() == stored

        # Its metadata and signed thumbnail link; the thumbnail is drawn from the bucket's bytes.
        status, image = await c.call("GET", f"/collections/flash/images/{ids[1]}")
        assert status == 200 and image["width"] == 272, image
        async with http.get(gw.url + image["thumbnail"], headers=A) as resp:
            assert resp.status == 200, await resp.text()
            with Image.open(io.BytesIO(await resp.read())) as thumbnail:
                thumbnail.load()
                assert thumbnail.width > 0 and thumbnail.height > 0

        found = await c.search(pictures[1], "clip", "flash")
        assert found[0]["id"] == ids[1] and found[0]["collection"] == "flash", found
        assert found[0]["score"] == pytest.approx(1.0, abs=1e-3)

        # Deleted from one collection: the other still holds the bytes. From the last: gone.
        assert (await c.call("DELETE", f"/collections/flash/images/{ids[0]}"))[0] == 204
        assert bucket.key(pictures[0]) in bucket.objects()
        assert (await c.call("DELETE", f"/collections/sheet/images/{again}"))[0] == 204
        assert bucket.objects() == {bucket.key(p): p for p in pictures[1:]}

        # A reindex with another model reads the originals back from the bucket (the only
        # place they are): the dinov2 search then finds each picture as itself.
        status, body = await c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
        assert status == 202, body
        await until(lambda: c.indexed("flash", "dinov2"), "the reindex from the bucket finished")
        listed = await c.collection("flash")
        assert listed["models"] == ["clip", "dinov2"] and listed["images"] == 2, listed
        found = await c.search(pictures[2], "dinov2", "flash")
        assert [r["id"] for r in found][:1] == [ids[2]] and sorted(r["id"] for r in found) == sorted(ids[1:]), found
        assert found[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert not (tmp_path / "blobs").exists()


@dataclass
class Outage:
    """A gateway whose bucket answered while ``kept`` was uploaded, then went away."""

    c: CollectionsClient
    moto: ThreadedMotoServer
    bucket: Bucket
    kept: bytes
    kept_id: str

    def internals(self) -> tuple[str, ...]:
        """What no answer to a tenant may carry: the bucket's address and name, class and library names."""
        return ("127.0.0.1", self.port, self.bucket.name, "Blob", "botocore", "Endpoint", "Traceback")

    @property
    def port(self) -> str:
        return self.bucket.url.rsplit(":", 1)[1]

    def come_back(self) -> None:
        # Same address, same buckets: moto keeps its state per process, not per server.
        self.moto = start_moto(int(self.port))


@contextlib.asynccontextmanager
async def _outage(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path) -> AsyncIterator[Outage]:
    server = start_moto()
    bucket = _new_bucket(moto_endpoint(server))
    kept = jpeg(140, (250, 230))
    outage: Outage | None = None
    try:
        async with aiohttp.ClientSession() as http, run_gateway(bucket.settings(embed, scraper, site, tmp)) as gw:
            c = CollectionsClient(http, gw)
            assert (await c.call("POST", "/collections", json={"name": "flash"}))[0] == 201
            (kept_id,) = await c.added("flash", [kept], "clip")
            server.stop()
            outage = Outage(c, server, bucket, kept, kept_id)
            yield outage
    finally:
        (outage.moto if outage else server).stop()


async def test_an_upload_while_the_bucket_is_down_is_refused_without_internals_and_works_once_it_is_back(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path, moto_credentials: None) -> None:
    refused = jpeg(141, (240, 250))
    async with _outage(embed, scraper, site, tmp_path) as down:
        c = down.c
        status, body = await c.upload("flash", [refused], "clip")
        assert status >= 500, body
        for internal in down.internals():
            assert internal not in str(body), (internal, body)
        # Nothing half-listed: the refused picture has no record; an outage hides nothing either.
        assert (await c.collection("flash"))["images"] == 1
        status, listed = await c.call("GET", "/collections/flash/images")
        assert status == 200 and [i["id"] for i in listed["images"]] == [down.kept_id], listed

        down.come_back()
        status, listed = await c.call("GET", "/collections/flash/images")
        assert status == 200 and listed["total"] == 1, listed
        # Added, not a "duplicate": the failed upload left no record behind.
        (added,) = await c.added("flash", [refused], "clip")
        assert set(down.bucket.objects()) == {down.bucket.key(down.kept), down.bucket.key(refused)}
        assert [r["id"] for r in await c.search(refused, "clip", "flash")][:1] == [added]


# What a tenant is told while the bucket is down (errors.storage_error decides it): an
# outage is a 503 to retry, never a 404 that says the picture is gone, never internals.
async def _upload_says_storage_is_unavailable(down: Outage) -> None:
    status, body = await down.c.upload("flash", [jpeg(142, (230, 240))], "clip")
    assert status == 503 and "stor" in body["detail"].lower(), body


async def _thumbnail_is_unavailable_not_gone(down: Outage) -> None:
    status, image = await down.c.call("GET", f"/collections/flash/images/{down.kept_id}")
    assert status == 200, image
    async with down.c.http.get(down.c.gw.url + image["thumbnail"], headers=A) as resp:
        assert resp.status == 503, await resp.text()  # it is still stored: a 404 would say it is gone


async def _delete_that_happened_answers_204(down: Outage) -> None:
    # The image's points and record go before its bytes; bytes left behind are the collector's.
    status, body = await down.c.call("DELETE", f"/collections/flash/images/{down.kept_id}")
    assert (await down.c.call("GET", f"/collections/flash/images/{down.kept_id}"))[0] == 404
    assert status == 204, body


async def _failed_reindex_reason_has_no_internals(down: Outage) -> None:
    status, body = await down.c.call("POST", "/collections/flash/reindex", params={"embedding_model": "dinov2"})
    assert status == 202, body

    async def ended() -> bool:
        return (await down.c.collection("flash"))["index"]["dinov2"]["state"] in ("failed", "indexed")

    await until(ended, "the reindex ended")
    state = (await down.c.collection("flash"))["index"]["dinov2"]
    assert state["state"] == "failed" and state["reason"], state
    for internal in down.internals():
        assert internal not in state["reason"], (internal, state)


@pytest.mark.parametrize("probe", [
    _upload_says_storage_is_unavailable, _thumbnail_is_unavailable_not_gone, _delete_that_happened_answers_204,
    _failed_reindex_reason_has_no_internals,
])
async def test_what_a_tenant_is_told_while_the_bucket_is_down(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path, moto_credentials: None,
        probe: Callable[[Outage], Awaitable[None]]) -> None:
    async with _outage(embed, scraper, site, tmp_path) as down:
        await probe(down)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_up_refused(embed: BackgroundServer, scraper: BackgroundServer, folder: Path, bucket: Bucket,
                            *, credentials: bool = True) -> str:
    """``python -m search_gateway`` as an operator runs it, with a bucket it cannot use: it
    must exit (status 3, as for any start-up failure) and say why; what it wrote."""
    unset = ("GATEWAY_",) if credentials else ("GATEWAY_", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(unset)},
           # boto3 would otherwise ask the cloud's metadata address for credentials.
           "AWS_EC2_METADATA_DISABLED": "true",
           "GATEWAY_PORT": "0", "GATEWAY_EMBED_TARGET": embed.target, "GATEWAY_SCRAPER_TARGET": scraper.target,
           "GATEWAY_GALLERY": "on", "GATEWAY_GALLERY_PATH": str(folder / "gallery"),
           "GATEWAY_BLOBS_PATH": str(folder / "blobs"), "GATEWAY_BLOBS_URL": bucket.url,
           "GATEWAY_BLOBS_BUCKET": bucket.name, "GATEWAY_BLOBS_PREFIX": bucket.prefix}
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "search_gateway", cwd=ROOT, env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(child.communicate(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = output.decode(errors="replace")
    assert child.returncode == 3, text
    assert "Application startup failed" in text, text
    # Never a silent fallback to the local folder the settings also name.
    assert not (folder / "blobs").exists()
    return text


async def test_a_bucket_unreachable_missing_or_without_credentials_stops_the_start_up_with_a_sentence(
        embed: BackgroundServer, scraper: BackgroundServer, tmp_path: Path, moto_url: str,
        moto_credentials: None) -> None:
    unreachable = Bucket(f"http://127.0.0.1:{_closed_port()}", "tattoo")
    # The gateway never creates the bucket: a missing one is the operator's to create.
    absent = Bucket(moto_url, f"gw-absent-{uuid.uuid4().hex[:8]}")
    # Three separate gateways, started side by side: each waits on its own retries.
    cut_off, missing, anonymous = await asyncio.gather(
        _start_up_refused(embed, scraper, tmp_path / "a", unreachable),
        _start_up_refused(embed, scraper, tmp_path / "b", absent),
        _start_up_refused(embed, scraper, tmp_path / "c", _new_bucket(moto_url), credentials=False))

    assert f"the blob store at {unreachable.url} cannot be reached" in cut_off, cut_off
    assert f"bucket {absent.name!r} at {moto_url} does not exist; create it first" in missing, missing
    client = absent.client()
    assert absent.name not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.close()
    # No credentials: the sentence names the variables the gateway reads them from.
    assert "needs credentials and none were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in anonymous

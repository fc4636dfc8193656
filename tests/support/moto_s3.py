"""moto's S3 server on loopback for the tests that need a bucket over real HTTP.

moto keeps the buckets of every server in one process-wide state, so a test that wants
a bucket of its own names it uniquely.
"""

from __future__ import annotations

from typing import Any

import boto3
from moto.server import ThreadedMotoServer

# moto accepts any credentials; these exist only in the tests.
MOTO_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def start_moto(port: int = 0) -> ThreadedMotoServer:
    """A started server (port 0: any free one; a port given: the same endpoint again)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def moto_endpoint(server: ThreadedMotoServer) -> str:
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def moto_client(url: str) -> Any:
    """A boto3 client of the moto server at ``url`` (the caller closes it)."""
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", **MOTO_KEYS)


def create_bucket(url: str, name: str) -> None:
    client = moto_client(url)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from embed_server.config import EmbedSettings
from embed_server.server import create_server
from tattoo_search.v1 import embed_pb2_grpc
from tests.support.background import BackgroundServer, wait_for_health

# One ONNX export cache for the whole run: each tiny model is exported once.
ONNX_CACHE = tempfile.mkdtemp(prefix="test-onnx-cache-")
atexit.register(shutil.rmtree, ONNX_CACHE, ignore_errors=True)

TINY = {
    "EMBED_WEIGHTS": "random",
    "EMBED_ARCHITECTURE": "tiny",
    "EMBED_HOST": "127.0.0.1",
    "EMBED_PORT": "0",
    "EMBED_ONNX_CACHE_DIR": ONNX_CACHE,
}


def embed_server(**env: str) -> BackgroundServer:
    """An embed server with tiny random models unless `env` says otherwise."""
    settings = EmbedSettings.from_env({**TINY, **env})
    return BackgroundServer(lambda: create_server(settings))


# The ONNX variant exports all five tiny models first (about 15 s): `make test-fast` leaves it out.
@pytest.fixture(scope="module", params=["torch", pytest.param("onnx", marks=pytest.mark.slow)])
def tiny_server(request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    """All five tiny models, once per runtime: the API must not depend on which runs."""
    with embed_server(EMBED_RUNTIME=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def channel(tiny_server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tiny_server.target) as channel:
        wait_for_health(channel)
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> embed_pb2_grpc.EmbedServiceStub:
    return embed_pb2_grpc.EmbedServiceStub(channel)

"""Loading weights: the pretrained code path on real on-disk formats, missing weights,
and one model's failure leaving the others serving."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2

from embed_server.config import MODEL_NAMES
from embed_server.images import decode_image
from embed_server.models import CARDS
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.checkpoints import write_tiny_checkpoint
from tests.support.images import jpeg

PRETRAINED = {"EMBED_WEIGHTS": "pretrained", "EMBED_ARCHITECTURE": "full"}


# squeezenet's weights come with a package, not a folder (tests/embed_server/test_squeezenet.py).
# `make test-fast` keeps clip (its own checkpoint format) and dinov3 (a transformers checkpoint);
# siglip and the two dinov2s, transformers checkpoints too, run in `make test` (each builds,
# saves and loads a checkpoint: seconds apiece).
_ONE_PER_LOADER = ("clip", "dinov3")


@pytest.mark.parametrize("name", [name if name in _ONE_PER_LOADER else pytest.param(name, marks=pytest.mark.slow)
                                  for name in MODEL_NAMES if not CARDS[name].bundled_weights])
def test_a_saved_checkpoint_loads_through_the_pretrained_path(tmp_path: Path, name: str) -> None:
    reference_image, reference_text, tokenizer = write_tiny_checkpoint(name, tmp_path)
    images = [jpeg(11), jpeg(12, size=(200, 300))]
    card = CARDS[name]
    pixels = torch.from_numpy(np.stack([card.preprocess(decode_image(data, 10**8)) for data in images]))
    with torch.inference_mode():
        expected = reference_image(pixels).numpy()

    with embed_server(**PRETRAINED, EMBED_MODELS=name, EMBED_WEIGHTS_DIR=str(tmp_path)) as server:
        with grpc.insecure_channel(server.target) as channel:
            assert wait_for_health(channel) == health_pb2.HealthCheckResponse.SERVING
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            response = stub.Embed(embed_pb2.EmbedRequest(model=name, images=images), timeout=60)
            assert response.provenance.weights == embed_pb2.WEIGHTS_SOURCE_PRETRAINED
            np.testing.assert_allclose(to_numpy(response.embeddings), expected, atol=2e-5)
            (info,) = stub.ListModels(embed_pb2.ListModelsRequest()).models
            assert info.weights == embed_pb2.WEIGHTS_SOURCE_PRETRAINED
            if reference_text is not None:
                texts = ["a rose tattoo", "tribal wolf"]
                if name == "clip":
                    ids = tokenizer(texts)
                else:
                    ids = torch.from_numpy(
                        tokenizer(texts, padding="max_length", max_length=64, return_tensors="np")["input_ids"]
                    )
                with torch.inference_mode():
                    expected_text = reference_text(ids).numpy()
                text = stub.EmbedText(embed_pb2.EmbedTextRequest(model=name, texts=texts), timeout=60)
                np.testing.assert_allclose(to_numpy(text.embeddings), expected_text, atol=2e-5)


def test_missing_weights_fail_clearly_without_blocking_other_models(tmp_path: Path) -> None:
    write_tiny_checkpoint("dinov3", tmp_path)  # dinov3 is there, clip is not
    env = {**PRETRAINED, "EMBED_MODELS": "clip,dinov3", "EMBED_WEIGHTS_DIR": str(tmp_path)}
    with embed_server(**env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            models = _wait_for_states(stub, {"clip": embed_pb2.MODEL_STATE_FAILED, "dinov3": embed_pb2.MODEL_STATE_READY})
            assert "python -m embed_server.fetch_weights" in models["clip"].error
            assert "EMBED_WEIGHTS=random" in models["clip"].error
            # Not every configured model is warm: the server must not claim to serve.
            assert wait_for_health(channel, timeout=1) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as error:
                stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)]), timeout=30)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "fetch_weights" in error.value.details()
            assert stub.Embed(embed_pb2.EmbedRequest(model="dinov3", images=[jpeg(1)]), timeout=30).embeddings.rows == 1


# Slow: a server that loads each model on its first call, one after the other.
@pytest.mark.slow
def test_models_can_load_on_first_use() -> None:
    with embed_server(EMBED_MODELS="clip,siglip", EMBED_PRELOAD="false") as server:
        with grpc.insecure_channel(server.target) as channel:
            assert wait_for_health(channel) == health_pb2.HealthCheckResponse.SERVING
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            states = {m.name: m.state for m in stub.ListModels(embed_pb2.ListModelsRequest()).models}
            assert states == {"clip": embed_pb2.MODEL_STATE_NOT_LOADED, "siglip": embed_pb2.MODEL_STATE_NOT_LOADED}
            futures = [stub.Embed.future(embed_pb2.EmbedRequest(model="siglip", images=[jpeg(i)])) for i in range(4)]
            assert [f.result(timeout=60).embeddings.rows for f in futures] == [1, 1, 1, 1]
            states = {m.name: m.state for m in stub.ListModels(embed_pb2.ListModelsRequest()).models}
            assert states == {"clip": embed_pb2.MODEL_STATE_NOT_LOADED, "siglip": embed_pb2.MODEL_STATE_READY}


def test_random_weights_are_reproducible_from_the_seed() -> None:
    vectors = []
    for _ in range(2):
        with embed_server(EMBED_MODELS="dinov2", EMBED_SEED="7") as server:
            with grpc.insecure_channel(server.target) as channel:
                wait_for_health(channel)
                stub = embed_pb2_grpc.EmbedServiceStub(channel)
                vectors.append(to_numpy(stub.Embed(embed_pb2.EmbedRequest(model="dinov2", images=[jpeg(3)])).embeddings))
    np.testing.assert_array_equal(vectors[0], vectors[1])


def _wait_for_states(stub: embed_pb2_grpc.EmbedServiceStub, wanted: dict[str, int]) -> dict[str, embed_pb2.ModelInfo]:
    import time

    deadline = time.monotonic() + 60
    while True:
        models = {m.name: m for m in stub.ListModels(embed_pb2.ListModelsRequest(), timeout=10).models}
        if all(models[name].state == state for name, state in wanted.items()) or time.monotonic() > deadline:
            assert {n: models[n].state for n in wanted} == wanted
            return models
        time.sleep(0.05)

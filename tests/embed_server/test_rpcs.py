"""Every RPC for every model, through the generated stubs, against a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service_common.model_registry import get_card, list_models, text_models
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2
from tests.support.background import wait_for_health
from tests.support.images import jpeg

MODEL_NAMES = list_models()
GRIDS = {name: get_card(name).grid for name in MODEL_NAMES}
TEXT_MODELS = text_models()


def embed(stub, model: str, images: list[bytes]) -> np.ndarray:
    return to_numpy(stub.Embed(embed_pb2.EmbedRequest(model=model, images=images), timeout=60).embeddings)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_embed_returns_one_unit_vector_per_image_in_order(stub, model: str) -> None:
    images = [jpeg(1), jpeg(2), jpeg(3)]
    together = embed(stub, model, images)
    assert together.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Order: each row is what that image gives alone, whatever else shared its batch.
    alone = np.concatenate([embed(stub, model, [image]) for image in reversed(images)])[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3), "different images gave the same vector"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_embed_patches_returns_the_model_grid_without_cls_or_registers(stub, model: str) -> None:
    response = stub.EmbedPatches(embed_pb2.EmbedPatchesRequest(model=model, image=jpeg(4)), timeout=60)
    patches = to_numpy(response.patches)
    assert (response.grid_height, response.grid_width) == GRIDS[model]
    assert patches.shape[0] == response.grid_height * response.grid_width
    np.testing.assert_allclose(np.linalg.norm(patches, axis=1), 1.0, atol=1e-5)
    assert response.provenance.model == model
    assert response.provenance.weights == embed_pb2.WEIGHTS_SOURCE_RANDOM


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_cross_attention_against_itself_and_another_image(stub, model: str) -> None:
    query = jpeg(5)
    request = embed_pb2.CrossAttentionRequest(
        model=model,
        query_image=query,
        candidate_images=[query, jpeg(6)],
        top_k=3,
        include_similarity_matrix=True,
        include_attention=True,
        temperature=0.05,
    )
    response = stub.CrossAttention(request, timeout=60)
    grid = GRIDS[model]
    assert (response.query_grid_height, response.query_grid_width) == grid
    assert len(response.candidates) == 2
    patches = to_numpy(stub.EmbedPatches(embed_pb2.EmbedPatchesRequest(model=model, image=query)).patches)
    for candidate in response.candidates:
        similarity = to_numpy(candidate.similarity_matrix)
        n = grid[0] * grid[1]
        assert similarity.shape == (n, n)
        assert candidate.overall_similarity == pytest.approx(float(similarity.mean()), abs=1e-5)
        top_indices, top_scores = to_numpy(candidate.top_indices), to_numpy(candidate.top_scores)
        assert top_indices.shape == top_scores.shape == (n, 3)
        assert np.all(np.diff(top_scores, axis=1) <= 1e-6), "top-k must be best first"
        np.testing.assert_allclose(top_scores, np.take_along_axis(similarity, top_indices, axis=1), atol=1e-5)
        np.testing.assert_allclose(to_numpy(candidate.max_similarity).ravel(), similarity.max(axis=1), atol=1e-5)
        assert to_numpy(candidate.max_similarity).shape == grid
        attention = to_numpy(candidate.attention)
        np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-4)
        assert np.all(attention.argmax(axis=1) == similarity.argmax(axis=1))
    # Against itself, every query patch's best match scores ~1 (its own features).
    same = response.candidates[0]
    np.testing.assert_allclose(to_numpy(same.top_scores)[:, 0], 1.0, atol=1e-4)
    assert same.global_similarity == pytest.approx(1.0, abs=1e-4)
    # The full matrix is what the patch features say.
    np.testing.assert_allclose(to_numpy(same.similarity_matrix), patches @ patches.T, atol=1e-4)


def test_cross_attention_leaves_out_the_matrices_unless_asked(stub) -> None:
    response = stub.CrossAttention(
        embed_pb2.CrossAttentionRequest(model="dinov3", query_image=jpeg(1), candidate_images=[jpeg(2)]), timeout=60
    )
    candidate = response.candidates[0]
    assert not candidate.HasField("similarity_matrix") and not candidate.HasField("attention")
    assert to_numpy(candidate.top_indices).shape == (196, 1)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_embed_text_gives_unit_vectors_in_the_image_space(stub, model: str) -> None:
    response = stub.EmbedText(embed_pb2.EmbedTextRequest(model=model, texts=["a rose tattoo", "a geometric wolf"]))
    vectors = to_numpy(response.embeddings)
    image_dim = embed(stub, model, [jpeg(1)]).shape[1]
    assert vectors.shape == (2, image_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-4)


@pytest.mark.parametrize("model", [name for name in MODEL_NAMES if name not in TEXT_MODELS])
def test_text_for_a_model_without_a_text_tower_is_refused(stub, model: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.EmbedText(embed_pb2.EmbedTextRequest(model=model, texts=["rose"]))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no text tower" in error.value.details() and ", ".join(TEXT_MODELS) in error.value.details()


def test_list_models_describes_each_model(stub) -> None:
    models = {m.name: m for m in stub.ListModels(embed_pb2.ListModelsRequest()).models}
    assert set(models) == set(MODEL_NAMES)
    for name, info in models.items():
        assert (info.grid_height, info.grid_width) == GRIDS[name]
        card = get_card(name)
        assert info.image_size == card.image_size
        assert info.patch_size == card.patch_size
        # A ViT's grid is image_size // patch_size; a CNN's card states its own (squeezenet: 13 at 227 px).
        assert GRIDS[name] == ((card.grid_side,) * 2 if card.grid_side else (224 // card.patch_size,) * 2)
        assert info.supports_text == (name in TEXT_MODELS)
        assert info.state == embed_pb2.MODEL_STATE_READY
        assert info.weights == embed_pb2.WEIGHTS_SOURCE_RANDOM
        assert info.runtime in ("torch", "onnx") and info.device == "cpu" and info.precision == "fp32"
        assert list(info.providers) == (["CPUExecutionProvider"] if info.runtime == "onnx" else ["cpu"])
        assert info.global_dim > 0 and info.patch_dim > 0


def test_health_is_serving_and_reflection_lists_the_service(channel) -> None:
    assert wait_for_health(channel, timeout=5) == health_pb2.HealthCheckResponse.SERVING
    assert wait_for_health(channel, timeout=5, service="tattoo_search.v1.EmbedService") == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "tattoo_search.v1.EmbedService" in services
    assert "grpc.health.v1.Health" in services

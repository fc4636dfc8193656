"""Bad input gets a clear status, never a crash or a hang, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest
from PIL import Image

from service_common.model_registry import list_models
from tattoo_search.v1 import embed_pb2
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import encode, jpeg, noise_image


def status_of(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value.code(), error.value.details()


def test_unknown_model_lists_the_valid_names(stub) -> None:
    code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="resnet", images=[jpeg(1)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "resnet" in details and ", ".join(list_models()) in details


def test_empty_batch(stub) -> None:
    code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="clip"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least one image" in details
    code, details = status_of(stub.EmbedText, embed_pb2.EmbedTextRequest(model="clip"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least one text" in details
    code, details = status_of(stub.CrossAttention, embed_pb2.CrossAttentionRequest(model="clip", query_image=jpeg(1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "candidate" in details


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"", "empty"),
        (b"<html><body>not an image</body></html>", "not a recognised image format"),
        (jpeg(1)[:600], "truncated"),  # cut inside the header
        (jpeg(1)[:-2000], "truncated"),  # cut inside the pixel data
        (encode(noise_image(1), "TIFF"), "not accepted"),
    ],
)
def test_an_unusable_image_is_named_by_its_index(stub, bad: bytes, reason: str) -> None:
    code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="dinov3", images=[jpeg(1), jpeg(2), bad]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("image 2 is not usable") and reason in details, details


def test_a_decompression_bomb_is_refused_before_decoding(stub) -> None:
    # 8000x8000 = 64 Mpx of one colour: a few hundred KB as PNG, 192 MB once decoded.
    bomb = encode(Image.new("L", (8000, 8000), 255), "PNG")
    assert len(bomb) < 1_000_000
    code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="clip", images=[bomb]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in details and "image 0" in details


def test_too_many_images_in_one_request(stub) -> None:
    code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)] * 65))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "too many images: 65 (limit 64" in details


def test_bad_text_requests(stub) -> None:
    code, details = status_of(stub.EmbedText, embed_pb2.EmbedTextRequest(model="clip", texts=["ok", "  "]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "text 1 is empty" in details
    code, details = status_of(stub.EmbedText, embed_pb2.EmbedTextRequest(model="siglip", texts=["x" * 1001]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1001 characters" in details


def test_bad_cross_attention_parameters(stub) -> None:
    base = dict(model="clip", query_image=jpeg(1), candidate_images=[jpeg(2)])
    code, details = status_of(stub.CrossAttention, embed_pb2.CrossAttentionRequest(**base, top_k=1000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in details
    code, details = status_of(stub.CrossAttention, embed_pb2.CrossAttentionRequest(**base, temperature=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "temperature" in details


def test_the_server_still_serves_after_bad_requests(stub) -> None:
    status_of(stub.Embed, embed_pb2.EmbedRequest(model="clip", images=[b"junk"]))
    assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(3)]), timeout=30).embeddings.rows == 1


# Slow: a server of its own, started with a transport limit.
@pytest.mark.slow
def test_a_request_over_the_byte_limit_is_refused_by_the_transport() -> None:
    with embed_server(EMBED_MODELS="clip", EMBED_MAX_REQUEST_BYTES="100000") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            from tattoo_search.v1 import embed_pb2_grpc

            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            code, details = status_of(stub.Embed, embed_pb2.EmbedRequest(model="clip", images=[b"\0" * 200_000]))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.Embed(embed_pb2.EmbedRequest(model="clip", images=[jpeg(1)])).embeddings.rows == 1

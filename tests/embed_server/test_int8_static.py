"""Static (calibrated) int8 beside dynamic int8: export, check, cache key, reporting."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from embed_server.config import EmbedSettings, SettingsError
from embed_server.images import decode_image
from embed_server.models import CARDS
from embed_server.models.base import Towers
from embed_server.models.seeded import build_random
from embed_server.models.tokenizers import load_tokenizer
from embed_server.runtimes import calibration, export_check, int8_modes
from embed_server.runtimes.base import ModelWeights
from embed_server.runtimes.onnx_export import ExportCache, ExportKey
from embed_server.runtimes.onnx_runtime import OnnxRuntime
from embed_server.runtimes.torch_runtime import TorchRuntime
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import jpeg

MODEL = "clip"  # a tiny one with a text tower: static covers the image tower, the text tower stays dynamic
# The export check's int8 threshold (export_check.MIN_COSINE): static int8 is held to the
# same bar as dynamic, as both serve under EMBED_PRECISION=int8.
MIN_COSINE = export_check.MIN_COSINE["int8"]


def _onnx(towers: Towers, cache: Path, int8_mode: str) -> OnnxRuntime:
    card = CARDS[MODEL]
    return OnnxRuntime(
        card, ModelWeights("static-int8-test", lambda: towers), cache=ExportCache(cache), device="cpu",
        precision="int8", threads=2, max_batch_size=8, tokenizer=load_tokenizer(card, None), int8_mode=int8_mode,
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_a_static_int8_export_passes_the_check_stays_close_to_fp32_and_is_cached_apart(tmp_path: Path) -> None:
    towers = build_random(MODEL, "tiny", 5)
    static = _onnx(towers, tmp_path, "static")
    assert static.precision == "int8-static"
    (static_file,) = tmp_path.glob(f"{MODEL}-*-image-int8-static-*.onnx")
    # The file entered the cache, so it passed the export check; and it passes it again here.
    export_check.check_export(static_file, export_check.image_probe(towers, CARDS[MODEL]), "int8", ["CPUExecutionProvider"],
                              2, "static file")
    assert calibration.CALIBRATION_SET in static_file.name, "the cache key must name the calibration set"
    # It is a QDQ file: the activation ranges are in it, not measured per batch.
    assert b"QuantizeLinear" in static_file.read_bytes() and b"DynamicQuantizeLinear" not in static_file.read_bytes()
    # The text tower has no calibration set: it is the dynamic file.
    assert len(list(tmp_path.glob(f"{MODEL}-*-text-int8-dynamic-*.onnx"))) == 1

    # Photos the calibration never saw, against torch fp32.
    pixels = np.stack([CARDS[MODEL].preprocess(decode_image(jpeg(seed), 10**8)) for seed in range(300, 308)])
    reference = TorchRuntime(towers, torch.device("cpu"))
    torch_global, torch_patches = reference.run_image(pixels)
    static_global, static_patches = static.run_image(pixels)
    assert _cosines(static_global, torch_global).min() >= MIN_COSINE
    assert _cosines(static_patches, torch_patches).min() >= MIN_COSINE

    # Dynamic int8 of the same weights in the same cache: its own file, not the static one.
    dynamic = _onnx(towers, tmp_path, "dynamic")
    assert dynamic.precision == "int8-dynamic"
    (dynamic_file,) = tmp_path.glob(f"{MODEL}-*-image-int8-dynamic-*.onnx")
    assert dynamic_file != static_file and dynamic_file.read_bytes() != static_file.read_bytes()
    dynamic_global, _ = dynamic.run_image(pixels)
    assert not np.array_equal(dynamic_global, static_global)

    # A second static start finds its file (the cache key is stable) and rewrites nothing.
    stamp = static_file.stat().st_mtime_ns
    again = _onnx(towers, tmp_path, "static")
    assert again.exports_from_cache and static_file.stat().st_mtime_ns == stamp


def test_the_cache_key_names_the_int8_recipe_and_calibration_set() -> None:
    keys = [ExportKey(MODEL, "sha256:ab", "image", "int8", variant) for variant in
            ("dynamic", "static-minmax-r1-cal1n32s7", "static-minmax-r1-cal2n32s7", "static-entropy-r1-cal1n32s7")]
    assert len({key.stem for key in keys}) == len(keys)
    # fp32 and fp16 files keep their names (no variant).
    assert ExportKey(MODEL, "sha256:ab", "image", "fp32").stem == f"{MODEL}-sha256_ab-image-fp32-opset18-v2"


def test_the_calibration_set_is_fixed_and_made_of_distinct_pictures() -> None:
    first, second = calibration.calibration_pixels(CARDS[MODEL]), calibration.calibration_pixels(CARDS[MODEL])
    assert first.shape == (calibration.COUNT, 3, 224, 224) and first.dtype == np.float32
    assert np.array_equal(first, second)
    flat = first.reshape(len(first), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_list_models_and_provenance_say_which_int8_serves(mode: str, tmp_path: Path) -> None:
    env = {"EMBED_MODELS": "dinov3", "EMBED_RUNTIME": "onnx", "EMBED_PRECISION": "int8", "EMBED_INT8_MODE": mode,
           "EMBED_ONNX_CACHE_DIR": str(tmp_path)}
    with embed_server(**env) as server, grpc.insecure_channel(server.target) as channel:
        wait_for_health(channel, timeout=300)
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        (info,) = stub.ListModels(embed_pb2.ListModelsRequest()).models
        response = stub.Embed(embed_pb2.EmbedRequest(model="dinov3", images=[jpeg(3)]), timeout=60)
    assert info.runtime == "onnx" and not info.runtime_fallback
    assert info.precision == response.provenance.precision == f"int8-{mode}"
    assert len(list(tmp_path.glob(f"dinov3-*-image-int8-{mode}-*.onnx"))) == 1


def test_auto_takes_the_measured_choice_and_a_bad_mode_is_refused() -> None:
    for name, mode in int8_modes.AUTO.items():
        assert int8_modes.resolve(name, "auto") == mode
        assert int8_modes.resolve(name, "static") == "static" and int8_modes.resolve(name, "dynamic") == "dynamic"
    assert EmbedSettings.from_env({}).int8_mode == "auto"
    with pytest.raises(SettingsError, match="EMBED_INT8_MODE"):
        EmbedSettings.from_env({"EMBED_INT8_MODE": "fast"})

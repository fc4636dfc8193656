"""ONNX Runtime: the fast path. Sessions over cached exports; torch is only needed
when an export has to be made."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from embed_server.models.cards import ModelCard, Tokenizer
from embed_server.runtimes import calibration, export_check, int8_modes, onnx_export, static_int8
from embed_server.runtimes.base import ModelWeights
from embed_server.runtimes.onnx_export import ExportCache, ExportKey

log = logging.getLogger(__name__)

# Fastest first; intersected with what this onnxruntime build offers.
PROVIDER_PRIORITY = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


def choose_providers(device: str) -> list[str]:
    """Providers to ask for, fastest first: those this build offers and that actually
    load here. onnxruntime-gpu lists CUDA and TensorRT even where their libraries are
    missing, then falls back to the CPU silently (pitfall 9), so each GPU provider is
    tried on a one-node model first."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = set(ort.get_available_providers())
    chosen = [p for p in PROVIDER_PRIORITY if p in available and (p not in GPU_PROVIDERS or _loads(p))]
    if device.startswith("cuda") and not GPU_PROVIDERS & set(chosen):
        raise RuntimeError(
            f"EMBED_DEVICE={device} but no GPU provider of ONNX Runtime loads here "
            f"(offered: {', '.join(sorted(available))}); install the gpu extra and CUDA, or use EMBED_DEVICE=cpu"
        )
    return chosen


@functools.cache
def _loads(provider: str) -> bool:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=[provider, "CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        log.warning("ONNX Runtime provider %s does not load here: %s", provider, exc)
        return False
    usable = bool(session.get_providers()[0] == provider)
    if not usable:
        log.warning("ONNX Runtime provider %s is offered but falls back to the CPU here", provider)
    return usable


class OnnxRuntime:
    name = "onnx"
    fallback = ""

    def __init__(
        self,
        card: ModelCard,
        weights: ModelWeights,
        *,
        cache: ExportCache,
        device: str,
        precision: str,
        threads: int,
        max_batch_size: int,
        tokenizer: Tokenizer | None,
        memory_arena: bool = False,
        int8_mode: str = "auto",
    ) -> None:
        providers = choose_providers(device)
        on_gpu = bool(GPU_PROVIDERS & set(providers))
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        if precision == "fp16" and not on_gpu:
            raise RuntimeError("EMBED_PRECISION=fp16 needs a GPU provider; on CPU use fp32 or int8")
        if precision == "int8" and on_gpu:
            raise RuntimeError("EMBED_PRECISION=int8 is the CPU path; on GPU use fp16 or fp32")
        if precision == "int8" and card.name in int8_modes.NO_INT8:
            log.warning("%s: EMBED_PRECISION=int8 serves it in fp32 (%s)", card.name, int8_modes.NO_INT8[card.name])
            precision = "fp32"
        # Static int8 calibrates the image tower only: the text tower has no calibration
        # set, and its short prompts are embedded once and cached, so it stays dynamic.
        self._int8_mode = int8_modes.resolve(card.name, int8_mode) if precision == "int8" else None
        self.precision = int8_modes.precision_label(self._int8_mode) if self._int8_mode else precision
        self._card = card
        self._weights = weights
        self._cache = cache
        self._providers = providers
        self._threads = threads
        towers = ("image", "text") if card.supports_text else ("image",)

        # A warm start knows the fingerprint from the cache and never builds the model.
        remembered = cache.remembered_fingerprint(card.name, weights.source)
        paths = {t: cache.lookup(self._key(remembered, t, precision)) for t in towers} if remembered else {}
        self.exports_from_cache = bool(paths) and all(path is not None for path in paths.values())
        if self.exports_from_cache:
            self.weights_fingerprint = str(remembered)
        else:
            self.weights_fingerprint = weights.fingerprint()
            if remembered and remembered != self.weights_fingerprint:
                log.warning(
                    "%s: %s now builds weights %s, not %s as when last exported (new library versions?)",
                    card.name, weights.source, self.weights_fingerprint, remembered,
                )
            cache.remember_fingerprint(card.name, weights.source, self.weights_fingerprint)
            paths = {t: self._export(t, precision, tokenizer) for t in towers}

        options = _session_options(threads, memory_arena)
        provider_list = _provider_options(providers, precision, cache.folder, max_batch_size, card.preprocess.image_size)
        self._image = ort.InferenceSession(str(paths["image"]), options, providers=provider_list)
        text_path = paths.get("text")
        self._text = ort.InferenceSession(str(text_path), options, providers=provider_list) if text_path else None
        # What actually runs, not what was asked for: an onnxruntime-gpu build without
        # its CUDA libraries silently falls back to the CPU.
        self.providers = tuple(self._image.get_providers())
        self.device = "cuda:0" if GPU_PROVIDERS & set(self.providers[:1]) else "cpu"
        if on_gpu and self.device == "cpu":
            log.warning("%s: GPU providers were requested but ONNX Runtime runs on %s", card.name, self.providers)

    def run_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        global_vecs, patches = self._image.run(list(onnx_export.IMAGE_OUTPUTS), {"pixels": pixels})
        return global_vecs, patches

    def run_text(self, token_ids: np.ndarray) -> np.ndarray:
        if self._text is None:
            raise RuntimeError("this model has no text tower")
        (vectors,) = self._text.run(list(onnx_export.TEXT_OUTPUTS), {"input_ids": token_ids})
        return np.asarray(vectors)

    def _key(self, fingerprint: str, tower: str, precision: str) -> ExportKey:
        """The cache key of a tower's file; an int8 file's names its recipe (and calibration set)."""
        variant = ""
        if precision == "int8":
            static = self._int8_mode == "static" and tower == "image"
            variant = static_int8.variant("minmax", calibration.CALIBRATION_SET) if static else "dynamic"
        return ExportKey(self._card.name, fingerprint, tower, precision, variant)

    def _export(self, tower: str, precision: str, tokenizer: Tokenizer | None) -> Path:
        """The tower's file at `precision`, from the cache or made now (fp16 and int8
        are derived from the fp32 export). Every file made now is checked against the
        torch tower before it is cached; ExportMismatch if it disagrees."""
        card, towers = self._card, self._weights.towers()
        if tower == "image":
            probe = export_check.image_probe(towers, card)

            def make_fp32(target: Path) -> None:
                onnx_export.export_image_tower(towers.image, card.preprocess.image_size, target)
        else:
            assert tokenizer is not None, "a text tower needs its tokenizer"
            assert towers.text is not None, "a text export needs the model's text tower"
            text_tower = towers.text
            probe = export_check.text_probe(towers, tokenizer)
            text_length = next(iter(probe.inputs.values())).shape[1]

            def make_fp32(target: Path) -> None:
                onnx_export.export_text_tower(text_tower, text_length, target)

        key = self._key(self.weights_fingerprint, tower, precision)

        def verify(at: str) -> Callable[[Path], None]:
            what = f"{card.name} {tower} tower" + (f" ({key.variant} int8)" if at == "int8" else "")
            return lambda path: export_check.check_export(path, probe, at, self._providers, self._threads, what)

        fp32_key = ExportKey(card.name, self.weights_fingerprint, tower, "fp32")
        if precision == "fp32":
            path, cached = self._cache.get_or_create(fp32_key, make_fp32, verify("fp32"))
        else:
            derive: Callable[[Path, Path], None] = onnx_export.convert_fp16
            if key.variant == "dynamic":
                derive = onnx_export.quantize_int8
            elif key.variant:
                def derive(source: Path, target: Path) -> None:
                    # Calibrated on pictures drawn for it (calibration.py), never on the probe.
                    static_int8.quantize_image_tower(source, target, calibration.calibration_pixels(card))

            def make(target: Path) -> None:
                source, _ = self._cache.get_or_create(fp32_key, make_fp32, verify("fp32"))
                derive(source, target)

            path, cached = self._cache.get_or_create(key, make, verify(precision))
        log.info("%s %s tower: %s %s", card.name, tower, "cached export" if cached else "exported", path.name)
        return path


def _session_options(threads: int, memory_arena: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = memory_arena  # see EmbedSettings.onnx_memory_arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One forward pass at a time per model (the batcher serialises them), so the
    # intra-op pool gets the cores and inter-op parallelism would only oversubscribe.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads spin-wait for the next pass by default. With several models
    # sharing the cores, one model's spinning threads steal them from the next model's
    # pass: clip int8 at batch 1 halved (27.6 -> 14.7 img/s) when passes of two runtimes
    # alternated. Blocking instead costs 1-2% (fp32) to 6% (int8) on a lone model.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _provider_options(
    providers: list[str], precision: str, cache_folder: Path, max_batch: int, image_size: int
) -> list[tuple[str, dict[str, Any]]]:
    chosen: list[tuple[str, dict[str, Any]]] = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider":
            shape = f"3x{image_size}x{image_size}"
            chosen.append((provider, {
                "trt_fp16_enable": precision == "fp16",
                # Building a TensorRT engine takes minutes: keep them across restarts.
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_folder / "tensorrt"),
                "trt_timing_cache_enable": True,
                "trt_profile_min_shapes": f"pixels:1x{shape}",
                "trt_profile_opt_shapes": f"pixels:{max_batch}x{shape}",
                "trt_profile_max_shapes": f"pixels:{max(max_batch, 32)}x{shape}",
            }))
        elif provider == "CUDAExecutionProvider":
            chosen.append((provider, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            chosen.append((provider, {}))
    return chosen

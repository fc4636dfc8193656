"""Static (calibrated) int8: activation ranges fixed at export time, QDQ format.

Dynamic int8 (onnx_export.quantize_int8) measures each activation's range on every
batch at run time; static int8 measures the ranges once, on a calibration set
(calibration.py), and stores them in the file as QuantizeLinear/DequantizeLinear
pairs, which ONNX Runtime fuses into integer kernels. That saves the run-time range
scans but clips whatever the calibration set did not reach.

Only the inputs of the weight-bearing products are quantised (MatMul with a constant
weight, Gemm, Conv: the patch embedding); their outputs, LayerNorm, Softmax, GELU and
attention's activation-by-activation products stay float, where int8 hurts a
transformer most. Measured on clip (random weights, 16 photos, least cosine to fp32,
global / patch): quantising the products' outputs as well gave 0.99948 / 0.99829 and
no measurable speed, keeping them float 0.99967 / 0.99950 (dynamic int8: 0.99970 /
0.99958). With float outputs ONNX Runtime fuses each DequantizeLinear-MatMul pair into
one integer product that writes float, as the dynamic path's kernels do, minus the
per-batch range scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from embed_server.runtimes.onnx_export import IMAGE_INPUTS

CalibrationMethod = Literal["minmax", "percentile", "entropy"]
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
# Images per calibration pass: the graph's batch axis is dynamic, and fewer, larger
# passes are faster than one image at a time.
CALIBRATION_BATCH = 8


# Bump when quantize_image_tower's options change, so files made the old way are not reused.
RECIPE = 1


def variant(method: CalibrationMethod, calibration_set: str) -> str:
    """The export cache's name for a static file: calibration method, recipe and the set it was calibrated on."""
    return f"static-{method}-r{RECIPE}-{calibration_set}"


class _PixelBatches:
    """onnxruntime's CalibrationDataReader (by duck typing: the ABC's subclass hook) over
    preprocessed pixels: one feed of up to CALIBRATION_BATCH images per call, then None;
    `set_range` restarts it over a slice of the feeds (strided calibration)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self._feeds = [np.ascontiguousarray(pixels[i:i + CALIBRATION_BATCH])
                       for i in range(0, len(pixels), CALIBRATION_BATCH)]
        self._pending: Iterator[np.ndarray] = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        return None if batch is None else {IMAGE_INPUTS[0]: batch}


def quantize_image_tower(source: Path, target: Path, pixels: np.ndarray, method: CalibrationMethod = "minmax") -> None:
    """Static int8 of an fp32 image tower export, calibrated on `pixels` (N, 3, S, S).

    - QDQ with u8 activations and s8 per-channel weights: ONNX Runtime's fast x86 pair.
    - reduce_range (7-bit weights), as for dynamic int8: CPUs without VNNI sum u8 x s8
      products in saturating 16-bit lanes, and an export may be served on another CPU
      than the one that made it.
    - MatMulConstBOnly: attention's activation-by-activation products stay float.
    - OpTypesToExcludeOutputQuantization: the products write float (see above).
    - CalibStridedMinMax 1: the calibrator keeps every calibrated tensor of every pass
      until it reduces them (a ViT-B/14 holds about 0.7 GB per batch of 8); reducing
      after each pass bounds that to one. (CalibMaxIntermediateOutputs would be the
      obvious option, but onnxruntime 1.32 drops the held outputs unreduced there.)
    """
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = {"minmax": OrtMethod.MinMax, "percentile": OrtMethod.Percentile, "entropy": OrtMethod.Entropy}
    reader = _PixelBatches(pixels)
    extra: dict[str, object] = {"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}
    if method == "minmax":
        extra["CalibStridedMinMax"] = 1
    quantize_static(
        str(source), str(target), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[method], extra_options=extra,
    )

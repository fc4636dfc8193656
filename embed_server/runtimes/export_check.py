"""Holding a fresh ONNX export to the torch model it came from, before it is cached.

An export that computes something else than its model (a tracer that froze a branch,
an int8 derivation made from the wrong fp32 file, a converter bug) would otherwise be
cached and served on every restart under a name that promises those weights. So each
new file runs a small probe batch (two fixed synthetic images; fixed texts for text
towers) and must agree with torch by cosine on every output, or it never enters the
cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from embed_server.models.cards import ModelCard, Tokenizer

if TYPE_CHECKING:
    from embed_server.models.base import Towers

log = logging.getLogger(__name__)

# Least cosine between ONNX Runtime's and torch's output, over every row of every
# output. fp32 agrees to 1 - 1e-12 on every model (docs/benchmarks.md); int8 lost up
# to 0.0006 on random weights, and fp16 a little. The margins catch wrong files, not
# rounding.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99}

PROBE_TEXTS = ("a black and grey rose tattoo on the forearm", "geometric wolf")


class ExportMismatch(RuntimeError):
    """A fresh export disagrees with the torch model it was made from."""


@dataclass(frozen=True)
class Probe:
    """Inputs and torch's outputs for one tower; names as the exported graph has them."""

    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]


def probe_images(card: ModelCard) -> np.ndarray:
    """Two fixed pictures through the model's own preprocessing: a smooth colour ramp
    and a high-contrast pattern, so patches differ from each other and from image to image."""
    size = 256
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = np.stack([x, y, 1.0 - (x + y) / 2], axis=-1)
    rings = 0.5 + 0.5 * np.sin(40 * np.hypot(x - 0.3, y - 0.6))
    stripes = np.stack([rings, (np.floor(x * 8) + np.floor(y * 8)) % 2, x * y], axis=-1)
    pictures = [Image.fromarray((255 * p).astype(np.uint8), "RGB") for p in (ramp, stripes)]
    return np.stack([card.preprocess(picture) for picture in pictures])


def image_probe(towers: Towers, card: ModelCard) -> Probe:
    import torch

    from embed_server.runtimes import onnx_export

    pixels = probe_images(card)
    with torch.inference_mode():
        outputs = towers.image(torch.from_numpy(pixels))
    expected = {name: out.float().numpy() for name, out in zip(onnx_export.IMAGE_OUTPUTS, outputs, strict=True)}
    return Probe({onnx_export.IMAGE_INPUTS[0]: pixels}, expected)


def text_probe(towers: Towers, tokenizer: Tokenizer) -> Probe:
    import torch

    from embed_server.runtimes import onnx_export

    assert towers.text is not None
    token_ids = tokenizer(list(PROBE_TEXTS))
    with torch.inference_mode():
        vectors = towers.text(torch.from_numpy(token_ids))
    return Probe({onnx_export.TEXT_INPUTS[0]: token_ids}, {onnx_export.TEXT_OUTPUTS[0]: vectors.float().numpy()})


def check_export(path: Path, probe: Probe, precision: str, providers: list[str], threads: int, what: str) -> None:
    """Raise ExportMismatch unless the file at `path` reproduces torch's outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # TensorRT would build an engine (minutes) for a file that may be thrown away.
    providers = [p for p in providers if p != "TensorrtExecutionProvider"] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    outputs = session.run(list(probe.expected), probe.inputs)
    threshold = MIN_COSINE[precision]
    least = {}
    for (name, expected), got in zip(probe.expected.items(), outputs, strict=True):
        if got.shape != expected.shape:
            raise ExportMismatch(
                f"{what}: the {precision} ONNX export gives {name} of shape {got.shape}, torch {expected.shape}"
            )
        cosine = float(_row_cosines(got, expected).min())
        if not cosine >= threshold:  # also catches NaN
            raise ExportMismatch(
                f"{what}: the {precision} ONNX export does not match the torch model it was made from "
                f"({name}: least cosine {cosine:.6f} on the probe batch, needs {threshold})"
            )
        least[name] = cosine
    log.info("%s: the %s export matches torch (least cosine %s)", what, precision,
             ", ".join(f"{name} {cosine:.6f}" for name, cosine in least.items()))


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosines: np.ndarray = np.sum(a * b, axis=1) / np.maximum(norm_a * norm_b, 1e-30)
    # A CNN's patch token is all zeros where ReLU silenced every channel of a cell (its
    # L2 normalisation keeps it zero): zero in both is agreement, not a cosine of 0.
    # Zero in one only still counts as 0.
    both_zero = (norm_a < 1e-6) & (norm_b < 1e-6)
    cosines[both_zero] = 1.0
    return cosines

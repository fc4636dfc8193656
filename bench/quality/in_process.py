"""Embedding a benchmark in this process, without a server: for the quality tests.

`python -m bench.quality` measures what a running embed server answers, which is what
the figures in docs/benchmarks.md are. A test that must show a broken preprocessing
or a broken ONNX file is caught needs to swap one piece at a time (the preprocessing
recipe, the file a session runs), which a server's settings cannot express; this
module takes each piece as an argument instead and otherwise uses the server's own
code (the card's `Preprocess`, the image tower, an ONNX Runtime session).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bench.quality.evaluate import evaluate
from bench.quality.layouts import Benchmark, ImageRef
from embed_server.preprocess import Preprocess

# (B, 3, S, S) pixels -> (global (B, D), patches (B, N, P)), as a runtime's run_image.
ImageRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_rgb(ref: ImageRef) -> Image.Image:
    with Image.open(ref.path) as image:
        rgb = image.convert("RGB")
    return rgb.crop(tuple(int(v) for v in ref.box)) if ref.box is not None else rgb


def embed_refs(
    refs: Sequence[ImageRef], preprocess: Preprocess, run: ImageRunner, batch: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Global vectors and patch tokens of `refs`, in order."""
    globals_: list[np.ndarray] = []
    patches: list[np.ndarray] = []
    for start in range(0, len(refs), batch):
        pixels = np.stack([preprocess(load_rgb(ref)) for ref in refs[start:start + batch]])
        g, p = run(pixels)
        globals_.append(np.asarray(g, np.float32))
        patches.append(np.asarray(p, np.float32))
    return np.concatenate(globals_), np.concatenate(patches)


def figures(benchmark: Benchmark, preprocess: Preprocess, run: ImageRunner) -> dict[str, object]:
    """Recall@1/5/10 and mAP@R of `benchmark` embedded with `preprocess` and `run`."""
    gallery, _ = embed_refs(benchmark.gallery, preprocess, run)
    queries, _ = embed_refs([q.image for q in benchmark.queries], preprocess, run)
    return evaluate(benchmark, gallery, queries, (1, 5, 10))


def onnx_runner(path: Path, threads: int = 2) -> ImageRunner:
    """An ONNX Runtime CPU session over an image tower file, run as the server runs it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    def run(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, p = session.run(outputs[:2], {session.get_inputs()[0].name: pixels})
        return np.asarray(g), np.asarray(p)

    return run

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


def _variants(model: str, folder: Path) -> dict[str, Path]:
    """fp32, int8 dynamic and int8 static files of a bundled-weights model, made with the
    server's own export and quantisation recipes but without its export check (which
    refuses squeezenet's int8 files: the point here is to measure them)."""
    from embed_server.models import CARDS, family
    from embed_server.models.weights import bundled_weights_folder
    from embed_server.runtimes import calibration, onnx_export, static_int8

    card = CARDS[model]
    towers = family(model).load_pretrained(bundled_weights_folder(card))
    files = {"fp32": folder / f"{model}-fp32.onnx", "int8-dynamic": folder / f"{model}-int8-dynamic.onnx",
             "int8-static": folder / f"{model}-int8-static.onnx"}
    onnx_export.export_image_tower(towers.image, card.preprocess.image_size, files["fp32"])
    onnx_export.quantize_int8(files["fp32"], files["int8-dynamic"])
    static_int8.quantize_image_tower(files["fp32"], files["int8-static"], calibration.calibration_pixels(card))
    return files


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.quality.in_process`: fp32 against int8 of a model whose weights
    ship with a package (squeezenet), in this process, on one benchmark."""
    import argparse
    import json
    import statistics
    import sys
    import tempfile
    import time

    from bench.quality import layouts
    from embed_server.models import CARDS

    parser = argparse.ArgumentParser(prog="python -m bench.quality.in_process", description=main.__doc__)
    parser.add_argument("--model", default="squeezenet")
    parser.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
    parser.add_argument("--path", required=True, type=Path)
    parser.add_argument("--limit", type=int, help="idx only: the first N images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args(argv)
    card = CARDS[args.model]
    if not card.bundled_weights:
        print(f"in_process: {args.model} has no weights in a package; measure it through a server", file=sys.stderr)
        return 2
    (benchmark,) = layouts.read(args.layout, args.path, limit=args.limit)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        files = _variants(args.model, Path(scratch))
        reference: tuple[np.ndarray, np.ndarray] | None = None
        for variant, path in files.items():
            run = onnx_runner(path, args.threads)
            gallery, gallery_patches = embed_refs(benchmark.gallery, card.preprocess, run)
            queries, _ = embed_refs([q.image for q in benchmark.queries], card.preprocess, run)
            measured = evaluate(benchmark, gallery, queries, (1, 5, 10))
            batch = np.stack([card.preprocess(load_rgb(ref)) for ref in benchmark.gallery[:8]])
            run(batch)
            timings = []
            for _ in range(5):
                start = time.perf_counter()
                run(batch)
                timings.append(time.perf_counter() - start)
            row: dict[str, object] = {"variant": variant, "img_s_b8": round(len(batch) / statistics.median(timings), 1),
                                      **{k: measured[k] for k in ("recall@1", "recall@5", "recall@10", "map@r")}}
            if reference is None:
                reference = (gallery, gallery_patches[:32])
            else:
                g = np.sum(gallery * reference[0], axis=1)
                p = np.sum(gallery_patches[:32] * reference[1], axis=-1)
                row["global_cos_min"], row["patch_cos_mean"] = round(float(g.min()), 5), round(float(p.mean()), 5)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{benchmark.name}: {len(benchmark.queries)} queries, {len(benchmark.gallery)} gallery images\n")
    print("| variant | b8 img/s | R@1 | R@5 | R@10 | mAP@R | global cos min | patch cos mean |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['img_s_b8']} | " + " | ".join(
            f"{100 * float(row[k]):.2f}" for k in ("recall@1", "recall@5", "recall@10", "map@r")  # type: ignore[arg-type]
        ) + f" | {row.get('global_cos_min', 1.0)} | {row.get('patch_cos_mean', 1.0)} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

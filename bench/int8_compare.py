"""fp32 against dynamic int8 against static (calibrated) int8, per model, in one run.

    python -m bench.int8_compare --models clip
    python -m bench.int8_compare --models clip,dinov3,siglip --sources 40 --min-seconds 20

Every model is full size with seeded RANDOM weights: the real compute and the real
quantisation error of each layer, but not pretrained weights, whose activation
outliers may be larger; retrieval figures say how closely int8 follows fp32, not how
good any model is. Each runtime is built exactly as the server builds it
(ServedModel, EMBED_PRECISION and EMBED_INT8_MODE), over its own export cache.

For each variant:
- raw throughput of the image tower at batch 8, images/s: the three variants timed
  interleaved (fp32, dynamic, static, fp32, ...) so drift of the shared machine hits
  all alike; medians.
- cosine to fp32, least and mean: global vectors over every benchmark image, patch
  tokens over the first 32.
- Recall@1 and mAP on the near-duplicate benchmark (bench.quality: generated at
  seed 0; static int8 is calibrated on embed_server/runtimes/calibration.py's own
  drawn pictures, so it never sees these), and agreement with fp32: the fraction of
  queries whose top-1 gallery image is fp32's top-1.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine_line
from bench.quality.evaluate import evaluate
from bench.quality.layouts import Benchmark, read_folder
from bench.quality.near_duplicates import Sizes, generate
from embed_server.config import EmbedSettings
from embed_server.images import decode_image
from embed_server.model_pool import ServedModel
from embed_server.models import CARDS
from embed_server.runtimes.base import Runtime
from service_common.model_registry import list_models

CACHE = Path("var/bench-onnx-cache")
BENCHMARKS = Path("var/quality")
VARIANTS = {"fp32": ("fp32", "auto"), "int8-dynamic": ("int8", "dynamic"), "int8-static": ("int8", "static")}
BATCH = 8
PATCH_IMAGES = 32


@dataclass
class Row:
    model: str
    variant: str
    images_per_s: float = 0.0
    global_cosine: tuple[float, float] = (1.0, 1.0)  # least, mean
    patch_cosine: tuple[float, float] = (1.0, 1.0)
    recall_at_1: float = 0.0
    map: float = 0.0
    top1_agreement: float = 1.0
    extra: dict[str, object] = field(default_factory=dict)


def _runtime(name: str, variant: str, architecture: str) -> Runtime:
    precision, mode = VARIANTS[variant]
    settings = EmbedSettings.from_env({
        "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": architecture, "EMBED_RUNTIME": "onnx", "EMBED_DEVICE": "cpu",
        "EMBED_PRECISION": precision, "EMBED_INT8_MODE": mode, "EMBED_ONNX_CACHE_DIR": str(CACHE), "EMBED_MODELS": name,
    })
    runtime = ServedModel(CARDS[name], settings)._build()[1]
    assert runtime.precision == variant, f"{name}: asked for {variant}, built {runtime.precision}"
    return runtime


def _benchmark(sources: int) -> Benchmark:
    folder = BENCHMARKS / f"int8-near-dup-{sources}"
    if not (folder / "manifest.json").exists():
        print(f"generating the near-duplicate benchmark in {folder} ...", file=sys.stderr, flush=True)
        generate(folder, Sizes(sources=sources, distractors=sources), seed=0)
    return read_folder(folder)


def _embed(runtime: Runtime, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    globals_, patches = [], []
    for start in range(0, len(pixels), BATCH):
        g, p = runtime.run_image(pixels[start:start + BATCH])
        globals_.append(g)
        if start < PATCH_IMAGES:
            patches.append(p)
    return np.concatenate(globals_), np.concatenate(patches)[:PATCH_IMAGES]


def _cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.min()), float(c.mean())


def _top1(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argmax(queries @ gallery.T, axis=1)


def compare(name: str, benchmark: Benchmark, min_seconds: float, architecture: str = "full") -> list[Row]:
    card = CARDS[name]
    refs = [*benchmark.gallery, *(q.image for q in benchmark.queries)]
    pixels = np.stack([card.preprocess(decode_image(ref.path.read_bytes(), 10**8)) for ref in refs])
    runtimes = {variant: _runtime(name, variant, architecture) for variant in VARIANTS}
    # Throughput: the same 8 benchmark images through each variant in turn.
    batch = np.ascontiguousarray(pixels[:BATCH])
    times: dict[str, list[float]] = {v: [] for v in runtimes}
    for runtime in runtimes.values():
        runtime.run_image(batch)  # warm-up
    started, rounds = time.perf_counter(), 0
    while rounds < 3 or time.perf_counter() - started < min_seconds * len(runtimes):
        for variant, runtime in runtimes.items():
            time.sleep(0.05)  # the previous variant's idle threads settle
            begin = time.perf_counter()
            runtime.run_image(batch)
            times[variant].append(time.perf_counter() - begin)
        rounds += 1
    vectors = {variant: _embed(runtime, pixels) for variant, runtime in runtimes.items()}
    del runtimes
    gc.collect()

    size = len(benchmark.gallery)
    reference_top1 = _top1(vectors["fp32"][0][:size], vectors["fp32"][0][size:])
    rows = []
    for variant, (global_vecs, patches) in vectors.items():
        gallery, queries = global_vecs[:size], global_vecs[size:]
        figures = evaluate(benchmark, gallery, queries, (1,))
        rows.append(Row(
            name, variant, BATCH / statistics.median(times[variant]),
            _cosine(global_vecs, vectors["fp32"][0]), _cosine(patches, vectors["fp32"][1]),
            float(figures["recall@1"]), float(figures["map"]),  # type: ignore[arg-type]
            float(np.mean(_top1(gallery, queries) == reference_top1)),
            {"runs": len(times[variant]), "queries": figures["queries"], "gallery": size},
        ))
    return rows


def table(rows: list[Row]) -> str:
    head = ["model", "variant", "b8 img/s", "vs fp32", "global cos min / mean", "patch cos min / mean",
            "R@1", "mAP", "top-1 = fp32's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fp32 = {row.model: row.images_per_s for row in rows if row.variant == "fp32"}
    for row in rows:
        cells = [row.model, row.variant, f"{row.images_per_s:.1f}", f"{row.images_per_s / fp32[row.model]:.2f}x",
                 f"{row.global_cosine[0]:.5f} / {row.global_cosine[1]:.5f}",
                 f"{row.patch_cosine[0]:.5f} / {row.patch_cosine[1]:.5f}",
                 f"{100 * row.recall_at_1:.2f}", f"{100 * row.map:.2f}", f"{100 * row.top1_agreement:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return ", ".join(flag for flag in wanted if f" {flag}" in flags) or "none of avx2/avx512/vnni"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="clip", help="comma list (default %(default)s)")
    parser.add_argument("--sources", type=int, default=40,
                        help="near-duplicate designs; as many distractors; 7 images each (default %(default)s)")
    parser.add_argument("--min-seconds", type=float, default=15, help="timing per variant and model (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--architecture", default="full", choices=("full", "tiny"), help="tiny: a smoke run only")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_models()]
    if unknown or args.sources < 1 or args.min_seconds < 0:
        parser.error(f"unknown model {', '.join(unknown)}" if unknown else "--sources must be at least 1")
    benchmark = _benchmark(args.sources)
    print(f"{machine_line()}; CPU flags: {_cpu_flags()}")
    print(f"near-duplicate benchmark: {len(benchmark.queries)} queries, {len(benchmark.gallery)} gallery images; "
          f"RANDOM {args.architecture}-size weights (not pretrained)\n", flush=True)
    rows: list[Row] = []
    for name in models:
        rows.extend(compare(name, benchmark, args.min_seconds, args.architecture))
        print(table([r for r in rows if r.model == name]).split("\n", 2)[2], file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

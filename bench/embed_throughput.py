"""Embedding throughput, side by side in one run: runtimes, precisions, serving.

    python -m bench.embed_throughput                    # everything (~20 min on 2 cores)
    python -m bench.embed_throughput --models clip --batches 1,8 --served clip

Every model is full size with seeded random weights (the real compute; meaningless
vectors). Sections:

1. Raw: the image tower alone on preprocessed pixels, built exactly as the server
   builds it, for torch fp32, ONNX Runtime fp32 and ONNX Runtime int8, at each batch.
2. int8 accuracy: cosine of int8 to fp32 outputs (global vectors and patches).
3. Served: `python -m embed_server` in a subprocess and 32 concurrent clients, each
   sending one 640x480 JPEG per request and the next when the answer arrives. The
   figure includes JPEG decoding, preprocessing and gRPC; against the raw figure at
   batch 8 it measures the serving overhead. Batching on (max 8) and off (max 1).
4. Memory: resident set of one server with every model loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import embed_server_process, machine_line, rss_mb
from embed_server.config import EmbedSettings
from embed_server.images import decode_image
from embed_server.model_pool import ServedModel
from embed_server.models import CARDS
from embed_server.runtimes.torch_runtime import configure_torch_threads
from service_common.model_registry import list_models
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.images import jpeg

CACHE = Path("var/bench-onnx-cache")
VARIANTS = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"), "int8": ("onnx", "int8")}


def _settings(variant: str, **extra: str) -> EmbedSettings:
    runtime, precision = VARIANTS[variant]
    env = {"EMBED_WEIGHTS": "random", "EMBED_RUNTIME": runtime, "EMBED_PRECISION": precision,
           "EMBED_ONNX_CACHE_DIR": str(CACHE), "EMBED_DEVICE": "cpu", **extra}
    return EmbedSettings.from_env(env)


def _server_env(variant: str, **extra: str) -> dict[str, str]:
    runtime, precision = VARIANTS[variant]
    return {"EMBED_WEIGHTS": "random", "EMBED_RUNTIME": runtime, "EMBED_PRECISION": precision,
            "EMBED_ONNX_CACHE_DIR": str(CACHE), "EMBED_DEVICE": "cpu", **extra}


def _photos(name: str, count: int) -> np.ndarray:
    card = CARDS[name]
    return np.stack([card.preprocess(decode_image(jpeg(seed, (640, 480)), 10**8)) for seed in range(count)])


def raw_section(models: list[str], variants: list[str], batches: list[int], min_seconds: float) -> dict:
    """Variants of one model are timed interleaved (torch, onnx, int8, torch, ...), so
    drift in the shared machine's speed hits all of them alike; medians per cell. A
    short pause precedes each pass: the previous runtime's idle threads may still be
    spinning (torch's OpenMP pool does), and would otherwise steal the cores."""
    results: dict[tuple[str, str], dict[int, float]] = {}
    accuracy: dict[str, tuple[float, float]] = {}
    print("## Raw image tower, images/s (median of interleaved runs)\n")
    print("| model | runtime | " + " | ".join(f"b{b}" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for name in models:
        probe = _photos(name, 16)
        runtimes = {v: ServedModel(CARDS[name], _settings(v))._build()[1] for v in variants}
        for variant in variants:
            results[(name, variant)] = {}
        for batch in batches:
            pixels = np.ascontiguousarray(np.resize(probe, (batch, *probe.shape[1:])))
            times: dict[str, list[float]] = {v: [] for v in variants}
            for runtime in runtimes.values():
                runtime.run_image(pixels)  # warm-up
            started = time.perf_counter()
            rounds = 0
            while rounds < 3 or time.perf_counter() - started < min_seconds * len(variants):
                for variant, runtime in runtimes.items():
                    time.sleep(0.05)
                    begin = time.perf_counter()
                    runtime.run_image(pixels)
                    times[variant].append(time.perf_counter() - begin)
                rounds += 1
            for variant in variants:
                results[(name, variant)][batch] = batch / statistics.median(times[variant])
        for variant in variants:
            row = results[(name, variant)]
            print(f"| {name} | {variant} | " + " | ".join(f"{row[b]:.1f}" for b in batches) + " |", flush=True)
        if "int8" in runtimes and "onnx" in runtimes:
            fp32, int8 = runtimes["onnx"].run_image(probe), runtimes["int8"].run_image(probe)
            accuracy[name] = (_min_cosine(int8[0], fp32[0]), _min_cosine(int8[1], fp32[1]))
        del runtimes
        gc.collect()
    if len(variants) > 1 and 8 in batches:
        print("\nRatios at batch 8:\n")
        print("| model | onnx / torch | int8 / onnx | int8 / torch |")
        print("|---|---|---|---|")
        for name in models:
            at8 = {v: results.get((name, v), {}).get(8) for v in ("onnx", "torch", "int8")}
            cells = [(at8["onnx"], at8["torch"]), (at8["int8"], at8["onnx"]), (at8["int8"], at8["torch"])]
            print(f"| {name} | " + " | ".join(f"{a / b:.2f}x" if a and b else "-" for a, b in cells) + " |")
    if accuracy:
        print("\n## int8 accuracy: minimum cosine to ONNX fp32 over 16 photos\n")
        print("| model | global vector | patch tokens |")
        print("|---|---|---|")
        for name, (global_cos, patch_cos) in accuracy.items():
            print(f"| {name} | {global_cos:.5f} | {patch_cos:.5f} |")
    return results


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


async def _load(target: str, model: str, clients: int, warmup_s: float, measure_s: float) -> float:
    import grpc

    images = [jpeg(seed, size=(640, 480)) for seed in range(clients)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        counting = False
        done = 0
        stop_at = time.monotonic() + warmup_s + measure_s

        async def client(index: int) -> None:
            nonlocal done
            request = embed_pb2.EmbedRequest(model=model, images=[images[index]])
            while time.monotonic() < stop_at:
                await stub.Embed(request, timeout=300)
                if counting:
                    done += 1

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(warmup_s)
        counting, started = True, time.monotonic()
        await asyncio.sleep(measure_s)
        counting, elapsed = False, time.monotonic() - started
        await asyncio.gather(*tasks)
        return done / elapsed


def served(model: str, variant: str, max_batch: int, clients: int, seconds: float) -> float:
    env = _server_env(variant, EMBED_MODELS=model, EMBED_MAX_BATCH_SIZE=str(max_batch))
    with embed_server_process(env) as (target, _pid):
        return asyncio.run(_load(target, model, clients, warmup_s=min(5.0, seconds / 3), measure_s=seconds))


def served_section(plan: list[tuple[str, str]], raw: dict, clients: int, seconds: float) -> None:
    print(f"\n## Served: {clients} concurrent single-image clients, 640x480 JPEG, images/s\n")
    print("| model | runtime | batching off (max 1) | batching on (max 8) | on / off "
          "| on / raw b8 same runtime | on / raw torch b8 |")
    print("|---|---|---|---|---|---|---|")
    for name, variant in plan:
        off = served(name, variant, 1, clients, seconds)
        on = served(name, variant, 8, clients, seconds)
        same = raw.get((name, variant), {}).get(8)
        base = raw.get((name, "torch"), {}).get(8)
        ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
        print(f"| {name} | {variant} | {off:.1f} | {on:.1f} | {on / off:.2f}x | {ratio(on, same)} | {ratio(on, base)} |",
              flush=True)


def memory_section(variants: list[str]) -> None:
    print("\n## Memory: one embed server with every model loaded (warm export cache)\n")
    print("| runtime | resident MB after start | after 20 requests per model |")
    print("|---|---|---|")
    import grpc

    for variant in variants:
        with embed_server_process(_server_env(variant)) as (target, pid):
            started = rss_mb(pid)
            with grpc.insecure_channel(target) as channel:
                stub = embed_pb2_grpc.EmbedServiceStub(channel)
                for name in list_models():
                    for seed in range(5):
                        stub.Embed(embed_pb2.EmbedRequest(model=name, images=[jpeg(seed, (640, 480))] * 4), timeout=300)
            print(f"| {variant} | {started:.0f} | {rss_mb(pid):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(list_models()))
    parser.add_argument("--variants", default="torch,onnx,int8")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="per raw measurement")
    # clip on every variant, each other model on ONNX Runtime fp32.
    served = ["clip:torch", "clip:onnx", "clip:int8"] + [f"{name}:onnx" for name in list_models() if name != "clip"]
    parser.add_argument("--served", default=",".join(served),
                        help="model:variant pairs for the served section ('' to skip)")
    parser.add_argument("--served-seconds", type=float, default=12.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--memory", default="onnx,int8", help="variants for the memory section ('' to skip)")
    args = parser.parse_args()
    configure_torch_threads(EmbedSettings().threads)
    print(f"machine: {machine_line()}\n")
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",")]
    raw = raw_section(models, args.variants.split(","), batches, args.min_seconds) if models else {}
    plan = [tuple(item.split(":")) for item in args.served.split(",") if item]
    if plan:
        served_section(plan, raw, args.clients, args.served_seconds)  # type: ignore[arg-type]
    if args.memory:
        memory_section(args.memory.split(","))


if __name__ == "__main__":
    main()

"""GPU embedding benchmark: ONNX Runtime's TensorRT and CUDA providers, fp32 and fp16.

    python -m bench.gpu                                  # every model, each GPU provider that loads here
    python -m bench.gpu --models clip --providers cuda --precisions fp16
    python -m bench.gpu --providers cpu                  # the same code path on the CPU provider

For each model x provider x precision:

- raw: the image tower alone on preprocessed pixels, built exactly as the server builds
  it, images/s at each batch (median of repeats, one warm-up pass excluded; each pass
  includes copying pixels to the device and the outputs back, as serving does);
- served: the embed server in a subprocess with that provider and precision, and
  `--served-clients` concurrent clients each sending one 640x480 JPEG per request
  (JPEG decoding, preprocessing, gRPC and dynamic batching included), images/s and the
  mean batch the server formed;
- parity: cosine of global vectors and of patch tokens against torch fp32 on the CPU,
  on a fixed batch of photos (min and mean);
- GPU memory: `nvidia-smi`'s figure for the measuring process (raw) and for the server
  (served), or the device's total in use where per-process figures are hidden; n/a
  without nvidia-smi;
- ran on: the execution providers the session actually uses (session.get_providers()),
  not the ones asked for: onnxruntime-gpu without its CUDA libraries falls back to the
  CPU silently (shared/MEASURED.md, pitfall 9).

Asking for a provider means that provider first, then those after it in the server's
order (TensorRT, CUDA, CPU), so nodes a provider cannot run fall back as in serving;
`cuda` therefore excludes TensorRT. The server has no setting for this, so the served
subprocess is this module with `--serve-from`, which narrows the server's choice and
then runs `python -m embed_server`'s main.

Prints a Markdown table for docs/benchmarks.md; `--json` writes the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import gc
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from bench.common import embed_server_process, machine_line, median_seconds
from embed_server.runtimes import onnx_runtime
from service_common.model_registry import list_models

if TYPE_CHECKING:
    from embed_server.runtimes.base import Runtime

# Module-level imports stay free of torch: the served subprocess imports this module,
# and a server with a warm export cache never imports torch (about 700 MB).

TENSORRT, CUDA, CPU = onnx_runtime.PROVIDER_PRIORITY
GPU_PROVIDERS = (TENSORRT, CUDA)
NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
LABELS = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    model: str
    provider: str   # the provider asked for first (an ONNX Runtime name)
    precision: str


@dataclass
class Result:
    model: str
    provider: str
    precision: str
    providers_used: list[str] = field(default_factory=list)
    raw_images_per_s: dict[int, float] = field(default_factory=dict)
    served_images_per_s: float | None = None
    served_mean_batch: float | None = None
    served_providers: list[str] = field(default_factory=list)
    parity: dict[str, float] = field(default_factory=dict)  # global_min, global_mean, patch_min, patch_mean
    gpu_memory_mb: dict[str, float | None] = field(default_factory=dict)  # raw, served
    gpu_memory_scope: str = "n/a"  # "process", "device" (total in use) or "n/a"
    error: str = ""


# --- providers


@contextmanager
def providers_from(first: str) -> Iterator[None]:
    """The server's own provider choice, narrowed to `first` and those after it."""
    choose = onnx_runtime.choose_providers
    allowed = onnx_runtime.PROVIDER_PRIORITY[onnx_runtime.PROVIDER_PRIORITY.index(first):]

    def narrowed(device: str) -> list[str]:
        return [p for p in choose(device) if p in allowed]

    onnx_runtime.choose_providers = narrowed
    try:
        yield
    finally:
        onnx_runtime.choose_providers = choose


def gpu_providers_here() -> list[str]:
    """GPU providers that are offered and actually load (pitfall 9: offered is not enough)."""
    offered = set(ort.get_available_providers())
    return [p for p in GPU_PROVIDERS if p in offered and onnx_runtime._loads(p)]


def _device(provider: str) -> str:
    return "cpu" if provider == CPU else "cuda"


def _usable(provider: str, precision: str) -> bool:
    # What OnnxRuntime accepts: fp16 needs a GPU provider, int8 is the CPU path.
    on_gpu = provider in GPU_PROVIDERS
    return (precision != "fp16" or on_gpu) and (precision != "int8" or not on_gpu)


# --- GPU facts from nvidia-smi


def _nvidia_smi(*query: str) -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def gpu_line() -> str | None:
    lines = _nvidia_smi("--query-gpu=name,memory.total,driver_version")
    if not lines:
        return None
    name, total, driver = (part.strip() for part in lines[0].split(","))
    return f"{name}, {total} MiB, driver {driver}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def gpu_memory_mb(pid: int) -> tuple[float | None, str]:
    """GPU memory of process `pid`; where nvidia-smi cannot see it (a container's PIDs
    differ from the host's), the first device's total in use."""
    apps = _nvidia_smi("--query-compute-apps=pid,used_memory")
    for line in apps or []:
        app_pid, used = (part.strip() for part in line.split(","))
        if app_pid == str(pid):
            return float(used), "process"
    totals = _nvidia_smi("--query-gpu=memory.used")
    if totals:
        return float(totals[0]), "device"
    return None, "n/a"


# --- measuring


def _settings_env(case: Case, weights: str, architecture: str, cache_dir: Path, max_batch: int) -> dict[str, str]:
    # EMBED_* variables of the caller (EMBED_WEIGHTS_DIR, EMBED_SEED, EMBED_THREADS ...) pass through.
    inherited = {k: v for k, v in os.environ.items() if k.startswith("EMBED_")}
    return {
        **inherited,
        "EMBED_MODELS": case.model,
        "EMBED_WEIGHTS": weights,
        "EMBED_ARCHITECTURE": architecture,
        "EMBED_RUNTIME": "onnx",
        "EMBED_DEVICE": _device(case.provider),
        "EMBED_PRECISION": case.precision,
        "EMBED_ONNX_CACHE_DIR": str(cache_dir),
        # TensorRT's optimisation profile is built for batches up to this: raw and served
        # use the same value so the engine built by one is reused by the other.
        "EMBED_MAX_BATCH_SIZE": str(max_batch),
        "EMBED_MAX_QUEUE_SIZE": str(max(128, 2 * max_batch)),
    }


def _build(model: str, env: dict[str, str]) -> Runtime:
    from embed_server.config import EmbedSettings
    from embed_server.model_pool import ServedModel
    from embed_server.models import CARDS

    # As the server loads a model: runtime, export cache, export check, warm-up pass.
    _description, runtime = ServedModel(CARDS[model], EmbedSettings.from_env(env))._build()
    return runtime


def reference(model: str, probe: np.ndarray, env: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """torch fp32 on the CPU: what every provider and precision is compared with."""
    runtime = _build(model, {**env, "EMBED_RUNTIME": "torch", "EMBED_DEVICE": "cpu", "EMBED_PRECISION": "fp32"})
    outputs = runtime.run_image(probe)
    del runtime
    gc.collect()
    return outputs


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine over the last axis (global vectors, or every patch token)."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def parity(outputs: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    global_cos, patch_cos = cosines(outputs[0], expected[0]), cosines(outputs[1], expected[1])
    return {"global_min": float(global_cos.min()), "global_mean": float(global_cos.mean()),
            "patch_min": float(patch_cos.min()), "patch_mean": float(patch_cos.mean())}


def measure_raw(case: Case, env: dict[str, str], probe: np.ndarray, expected: tuple[np.ndarray, np.ndarray],
                batches: list[int], seconds: float, result: Result) -> None:
    with providers_from(case.provider):
        runtime = _build(case.model, env)
    try:
        result.providers_used = list(runtime.providers)
        if runtime.name != "onnx":
            result.error = f"served by {runtime.name}, not ONNX Runtime: {runtime.fallback}"
        result.parity = parity(runtime.run_image(probe), expected)
        for batch in batches:
            pixels = np.ascontiguousarray(np.resize(probe, (batch, *probe.shape[1:])))
            result.raw_images_per_s[batch] = batch / median_seconds(functools.partial(runtime.run_image, pixels), seconds)
        used, scope = gpu_memory_mb(os.getpid())
        result.gpu_memory_mb["raw"], result.gpu_memory_scope = used, scope
    finally:
        del runtime
        gc.collect()  # the session's device memory goes before the server starts


def measure_served(case: Case, env: dict[str, str], clients: int, seconds: float, result: Result) -> None:
    import grpc

    from bench.embed_throughput import _load
    from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

    launcher = ("-m", "bench.gpu", "--serve-from", case.provider)
    # `bench` is not an installed package: the child finds it from any working folder.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with embed_server_process({**env, "PYTHONPATH": path}, command=launcher) as (target, pid):
        result.served_images_per_s = asyncio.run(
            _load(target, case.model, clients, warmup_s=min(5.0, seconds / 3), measure_s=seconds))
        used, scope = gpu_memory_mb(pid)
        result.gpu_memory_mb["served"] = used
        if scope != "n/a":
            result.gpu_memory_scope = scope
        with grpc.insecure_channel(target) as channel:
            reply = embed_pb2_grpc.EmbedServiceStub(channel).ListModels(embed_pb2.ListModelsRequest(), timeout=30)
    (info,) = [m for m in reply.models if m.name == case.model]
    result.served_providers = list(info.providers)
    if info.image_batches.batches:
        result.served_mean_batch = info.image_batches.items / info.image_batches.batches


# --- reporting


def _ran_on(providers: Sequence[str]) -> str:
    return ", ".join(LABELS.get(p, p) for p in providers) or "-"


def _pair(result: Result, kind: str) -> str:
    if not result.parity:
        return "-"
    return f"{result.parity[f'{kind}_min']:.6f} / {result.parity[f'{kind}_mean']:.6f}"


def _memory(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def table_header(batches: list[int]) -> list[str]:
    columns = ["model", "provider", "precision", "ran on", *(f"b{b} img/s" for b in batches), "served img/s",
               "served mean batch", "global cos min / mean", "patch cos min / mean", "GPU MB raw / served"]
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table_row(result: Result, batches: list[int]) -> str:
    ran_on = _ran_on(result.providers_used)
    if result.served_providers and result.served_providers != result.providers_used:
        ran_on += f" (served: {_ran_on(result.served_providers)})"
    if result.error:  # in a cell, so that it shows where the table is rendered
        ran_on += " (failed: " + result.error.replace("|", "/") + ")"
    raw = [f"{result.raw_images_per_s[b]:.1f}" if b in result.raw_images_per_s else "-" for b in batches]
    served = "-" if result.served_images_per_s is None else f"{result.served_images_per_s:.1f}"
    mean_batch = "-" if result.served_mean_batch is None else f"{result.served_mean_batch:.1f}"
    memory = f"{_memory(result.gpu_memory_mb.get('raw'))} / {_memory(result.gpu_memory_mb.get('served'))}"
    if result.gpu_memory_scope == "device":
        memory += " (device total)"
    cells = [result.model, LABELS[result.provider], result.precision, ran_on, *raw, served, mean_batch,
             _pair(result, "global"), _pair(result, "patch"), memory]
    return "| " + " | ".join(cells) + " |"


def header_lines(info: dict[str, Any]) -> list[str]:
    weights = info["weights"]
    meaning = ("seeded random weights: the real compute, meaningless vectors; parity compares runtimes, not quality"
               if weights == "random" else "pretrained weights")
    return [
        "# GPU embedding benchmark (python -m bench.gpu)",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['machine']}",
        f"- GPU: {info['gpu'] or 'none visible (no nvidia-smi)'}",
        f"- ONNX Runtime {info['onnxruntime']}, offered providers: {', '.join(info['offered_providers'])}",
        f"- weights: {weights} ({meaning}); architecture: {info['architecture']}",
        f"- raw: median of passes over at least {info['seconds']} s per cell, one warm-up pass excluded; "
        f"parity on {info['parity_images']} photos against torch fp32 on the CPU",
        f"- served: {info['served_clients']} concurrent clients of one 640x480 JPEG each for "
        f"{info['served_seconds']} s, server max batch {info['max_batch']}",
    ]


# --- command line


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(list_models()), help="comma-separated (default: all)")
    parser.add_argument("--providers", default="",
                        help="tensorrt, cuda, cpu (default: each GPU provider that loads here)")
    parser.add_argument("--precisions", default="",
                        help="fp32, fp16 (GPU), int8 (CPU); default fp32,fp16 on GPU, fp32 on CPU")
    parser.add_argument("--batches", default="", help="raw batch sizes (default 1,8,64 on GPU, 1,8 on CPU)")
    parser.add_argument("--served-clients", type=int, default=64)
    parser.add_argument("--served-seconds", type=float, default=10.0, help="served measurement (0 skips it)")
    parser.add_argument("--max-batch", type=int, default=0,
                        help="the server's EMBED_MAX_BATCH_SIZE (default: the largest of --batches)")
    parser.add_argument("--seconds", type=float, default=3.0, help="least time per raw measurement")
    parser.add_argument("--parity-images", type=int, default=8)
    parser.add_argument("--weights", choices=("random", "pretrained"), default="random")
    parser.add_argument("--architecture", choices=("full", "tiny"), default="full", help="tiny: for tests")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/bench-onnx-cache"),
                        help="ONNX exports and TensorRT engines (shared with bench.embed_throughput)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve-from", help=argparse.SUPPRESS)  # the served subprocess (see the docstring)
    args = parser.parse_args(argv)
    if args.serve_from:
        return args
    unknown = [p for p in _list(args.providers) if p.lower() not in NAMES]
    if unknown:
        parser.error(f"unknown provider {', '.join(unknown)}; valid: tensorrt, cuda, cpu")
    unknown = sorted(set(_list(args.models)) - set(list_models()))
    if unknown or not _list(args.models):
        parser.error(f"unknown model {', '.join(unknown) or '(none given)'}; valid: {', '.join(list_models())}")
    unknown = [p for p in _list(args.precisions) if p not in ("fp32", "fp16", "int8")]
    if unknown:
        parser.error(f"unknown precision {', '.join(unknown)}; valid: fp32, fp16, int8")
    if args.architecture == "tiny" and args.weights != "random":
        parser.error("--architecture tiny needs --weights random")
    try:
        batches = [int(b) for b in _list(args.batches)]
    except ValueError:
        parser.error(f"--batches must be whole numbers separated by commas, not {args.batches!r}")
    if any(b < 1 for b in batches) or args.served_clients < 1 or args.parity_images < 1 or args.max_batch < 0:
        parser.error("batch sizes, --served-clients and --parity-images must be at least 1, --max-batch at least 0")
    args.batches = batches
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_from:
        from embed_server.__main__ import main as serve

        with providers_from(args.serve_from):
            return serve()

    loading = gpu_providers_here()
    if args.providers:
        providers = list(dict.fromkeys(NAMES[p.lower()] for p in _list(args.providers)))
    else:
        providers = loading
    # Said before any model is built: asked for a provider that cannot run here, the
    # server would fail or fall back, and the figures would not be the provider's.
    missing = [LABELS[p] for p in providers if p in GPU_PROVIDERS and p not in loading]
    missing = missing or ([] if providers else ["a GPU"])
    if missing:
        print(f"bench.gpu: {' and '.join(missing)} provider of ONNX Runtime does not load here (offered: "
              f"{', '.join(ort.get_available_providers())}); install the gpu extra and CUDA, "
              f"or measure the CPU provider with --providers cpu", file=sys.stderr)
        return 2
    on_gpu = any(p in GPU_PROVIDERS for p in providers)
    precisions = _list(args.precisions) or (["fp32", "fp16"] if on_gpu else ["fp32"])
    batches = args.batches or ([1, 8, 64] if on_gpu else [1, 8])
    max_batch = args.max_batch or max(batches)
    models = list(dict.fromkeys(_list(args.models)))
    pairs = [(p, q) for p in providers for q in precisions if _usable(p, q)]
    if not pairs:
        print(f"bench.gpu: no usable provider and precision among {providers} x {precisions}: "
              f"fp16 needs a GPU provider, int8 is the CPU provider's", file=sys.stderr)
        return 2

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_line(),
        "gpu": gpu_line(),
        "onnxruntime": ort.__version__,
        "offered_providers": ort.get_available_providers(),
        "weights": args.weights,
        "architecture": args.architecture,
        "batches": batches,
        "seconds": args.seconds,
        "served_clients": args.served_clients,
        "served_seconds": args.served_seconds,
        "max_batch": max_batch,
        "parity_images": args.parity_images,
    }
    print("\n".join(header_lines(info)) + "\n")
    skipped = [f"{LABELS[p]} {q}" for p in providers for q in precisions if not _usable(p, q)]
    if skipped:
        print(f"skipped (fp16 needs a GPU provider, int8 is the CPU provider's): {', '.join(skipped)}\n")
    print("\n".join(table_header(batches)), flush=True)

    from bench.embed_throughput import _photos

    results: list[Result] = []
    for model in models:
        probe = _photos(model, args.parity_images)
        base = _settings_env(Case(model, CPU, "fp32"), args.weights, args.architecture, args.cache_dir, max_batch)
        try:
            expected = reference(model, probe, base)
        except Exception as exc:  # noqa: BLE001 - e.g. pretrained weights missing: the other models still run
            failed = f"the torch fp32 reference did not build: {type(exc).__name__}: {exc}".splitlines()[0]
            for provider, precision in pairs:
                results.append(Result(model, provider, precision, error=failed))
                print(table_row(results[-1], batches), flush=True)
            continue
        for provider, precision in pairs:
            case = Case(model, provider, precision)
            result = Result(model, provider, precision)
            env = _settings_env(case, args.weights, args.architecture, args.cache_dir, max_batch)
            # One case failing (an engine that does not build, a provider out of memory)
            # must not cost the others: a lent GPU is a short lease.
            try:
                measure_raw(case, env, probe, expected, batches, args.seconds, result)
                if args.served_seconds > 0:
                    measure_served(case, env, args.served_clients, args.served_seconds, result)
            except Exception as exc:  # noqa: BLE001 - reported in the row
                result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results.append(result)
            print(table_row(result, batches), flush=True)

    if args.json:
        report = {"info": info, "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

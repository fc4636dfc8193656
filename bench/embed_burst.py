"""A burst of Embed calls against one server: how many are refused, and the server's memory.

    python -m bench.embed_burst                        # full-size clip, ONNX Runtime
    python -m bench.embed_burst --architecture tiny    # a quick run

`python -m embed_server` runs in a subprocess with clip (seeded random weights: the
real compute, meaningless vectors). The script fires `--calls` concurrent Embed calls
of `--images` 640x480 JPEGs each, samples the server's resident set every 20 ms, and
prints it before the burst, at its peak, and `--settle` seconds after the last answer,
with the count of calls answered, refused (RESOURCE_EXHAUSTED) and failed otherwise,
and the images the server decoded (ListModels' images_decoded).

Measured on 2 shared cores of an AMD EPYC (avx2, avx512f, avx512_vnni), full-size clip,
ONNX Runtime fp32, queue 128, 200 calls of 8 images (RSS before / peak / 30 s after):

    before admission control (e7b3ce1): 175 refused, 25 answered; 705 / 2261 / 2225 MB
    admission before decoding, no trim: 183 refused, 17 answered; 707 / 1201 / 1165 MB; 137 images decoded
    admission + malloc_trim on drain:   183 refused, 17 answered; 707 / 1068 /  738 MB; 137 images decoded
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from pathlib import Path

import grpc

from bench.common import embed_server_process, machine_line, rss_mb
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.support.images import jpeg

CACHE = Path("var/bench-onnx-cache")


class PeakSampler:
    """The highest resident set of a process, sampled on a thread until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--architecture", choices=("full", "tiny"), default="full")
    parser.add_argument("--runtime", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--queue", type=int, default=128, help="EMBED_MAX_QUEUE_SIZE")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after the burst before the last reading")
    args = parser.parse_args()

    env = {"EMBED_MODELS": "clip", "EMBED_WEIGHTS": "random", "EMBED_ARCHITECTURE": args.architecture,
           "EMBED_RUNTIME": args.runtime, "EMBED_DEVICE": "cpu", "EMBED_ONNX_CACHE_DIR": str(CACHE),
           "EMBED_MAX_QUEUE_SIZE": str(args.queue)}
    images = [jpeg(seed, (640, 480)) for seed in range(args.images)]
    print(machine_line())
    print(f"clip {args.architecture}, {args.runtime}, queue {args.queue}: "
          f"{args.calls} concurrent Embed calls of {args.images} images")
    with embed_server_process(env) as (target, pid), grpc.insecure_channel(target) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)
        stub.Embed(embed_pb2.EmbedRequest(model="clip", images=images[:1]), timeout=120)  # warm
        time.sleep(2)
        before = rss_mb(pid)
        outcomes: collections.Counter[str] = collections.Counter()
        started = time.perf_counter()
        with PeakSampler(pid) as sampler:
            calls = [stub.Embed.future(embed_pb2.EmbedRequest(model="clip", images=images), timeout=600)
                     for _ in range(args.calls)]
            for call in calls:
                try:
                    call.result()
                    outcomes["answered"] += 1
                except grpc.RpcError as error:
                    outcomes[error.code().name] += 1
        burst_s = time.perf_counter() - started
        time.sleep(args.settle)
        after = rss_mb(pid)
        (info,) = stub.ListModels(embed_pb2.ListModelsRequest()).models
    print(f"burst took {burst_s:.1f} s: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"images decoded by the server: {getattr(info, 'images_decoded', 'n/a')} "
          f"(sent {args.calls * args.images}, +1 warm-up)")
    print(f"server RSS: before {before:.0f} MB, peak {sampler.peak:.0f} MB, {args.settle:.0f} s after {after:.0f} MB")


if __name__ == "__main__":
    main()

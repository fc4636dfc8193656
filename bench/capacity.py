"""Capacity model on paper: embed pods, gateway pods and store nodes for a load.

No measurement runs here: the per-unit costs below come from docs/benchmarks.md, from
figures measured for this model (docs/deployment.md, "Capacity model") and from
published benchmarks, each named where it is defined. The script turns them into pod
counts with the formulas of that section, so the table in the doc is reproducible and
anyone can redo it with their own measured figures:

    .venv/bin/python -m bench.capacity                      # the doc's table
    .venv/bin/python -m bench.capacity --searches 50 --gallery-size 2e6 --web-share 0.3
    .venv/bin/python -m bench.capacity --gpu-img-s 1500 --quantization scalar --json

Parameters are named as in the doc: S searches/s, M gallery images, w web share,
C candidates per web search, h gallery/cache hit rate of web candidates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace

GIB = 1024**3

# Bytes kept in RAM per stored vector component: float32 originals, or Qdrant's
# quantized copy in RAM with the originals on disk (scalar int8: 1 byte; binary: 1 bit).
COMPONENT_BYTES = {"none": 4.0, "scalar": 1.0, "binary": 1 / 8}


@dataclass(frozen=True)
class Load:
    searches_s: float  # S
    gallery_size: float  # M
    web_share: float  # w: share of searches with sources including web
    candidates: int = 100  # C: GATEWAY_MAX_CANDIDATES
    hit_rate: float = 0.0  # h: web candidates already known (cache or gallery URL)


@dataclass(frozen=True)
class Costs:
    """Per-unit costs and pod sizes; the defaults and their sources are in the doc."""

    # Embed pod: GPU images/s at the server's batch (published figure x batch factor),
    # and the CPU decode the pod does before the GPU sees a pixel.
    gpu_img_s: float = 6000.0  # clip ViT-B/32 fp16: 12,150 img/s published (RTX 4090, batch 1024) x 0.5 for batch 32
    decode_ms: float = 7.5  # measured: embed-server decode (JPEG draft) + clip preprocess, 1024x768, one core
    decode_workers: int = 6  # EMBED_DECODE_WORKERS in overlays/gpu
    embed_headroom: float = 0.7  # plan pods to run at 70% of their capacity
    min_embed_pods: int = 2  # embed autoscaler's minimum
    # Gateway pod.
    query_ms: float = 25.0  # CPU per search: upload full decode 15 ms measured + 10 ms estimated (HTTP, JSON, gRPC)
    candidate_ms: float = 3.0  # CPU per downloaded candidate: 0.19 ms check measured + ~3 ms estimated (HTTP client, gRPC)
    gateway_cpus: float = 2.0  # the gateway's CPU limit (base/gateway.yaml)
    gateway_headroom: float = 0.7  # the gateway autoscaler's CPU target
    download_concurrency: int = 32  # GATEWAY_DOWNLOAD_CONCURRENCY: downloads in flight per gateway pod
    download_s: float = 0.5  # mean time of one candidate download from the web (assumption; benchmarks use 0.2)
    image_kib: float = 230.0  # mean candidate size (the 1024x768 test JPEG)
    min_gateway_pods: int = 2
    # Store (Qdrant peers).
    dim: int = 512  # clip's global vector
    hnsw_m: int = 16  # Qdrant's default m; level 0 keeps 2m links of 4 bytes
    payload_bytes: float = 1024.0  # our payload (URLs, tags, collection, times): from 347 MiB/100k points on disk
    store_overhead: float = 1.5  # Qdrant's capacity-planning factor for index, versions, optimizer segments
    quantization: str = "none"  # none | scalar | binary (quantized copy in RAM, originals and payload on disk)
    replication: int = 2  # replication_factor in qdrant/values.yaml
    node_ram_gib: float = 8.0  # Qdrant pod's memory limit (qdrant/values.yaml)
    node_ram_usable: float = 0.75  # page cache, query buffers and optimizer need the rest
    store_qps_node: float = 600.0  # ANN queries/s per 4-vCPU peer: ~1,230 published on 8 vCPU, halved
    url_lookup_cost: float = 0.1  # a by-URL lookup (payload filter, limit 1) in ANN-query units (assumption)
    ingest_node: float = 2000.0  # upserts/s per peer (measured 1.8-2.7k points/s, embedded store, 2 cores)
    store_headroom: float = 0.7
    min_store_nodes: int = 3  # Raft needs three peers to survive one loss


@dataclass(frozen=True)
class Plan:
    load: Load
    images_s: float  # images embedded per second
    embed_pod_img_s: float  # what one embed pod does: min(GPU, decode)
    embed_pod_limit: str  # "GPU" or "CPU decode"
    embed_pods: int
    gateway_cpu: float  # cores busy
    downloads_s: float
    gateway_pods_cpu: int
    gateway_pods_downloads: int
    gateway_pods: int
    outbound_mib_s: float
    ram_per_point: float  # bytes, one replica
    store_ram_gib: float  # all replicas
    store_nodes_ram: int
    store_ann_s: float
    store_lookups_s: float
    store_writes_s: float
    store_nodes_load: int
    store_nodes: int
    bottleneck: str = field(default="")
    bottleneck_ratio: float = field(default=0.0)


def ram_per_point(c: Costs) -> float:
    """Bytes of RAM one stored point costs on one replica.

    Full precision keeps vector, links and payload in RAM; quantized keeps the
    compressed copy and links in RAM and leaves originals and payload on disk.
    """
    links = 2 * c.hnsw_m * 4  # level 0; upper levels add about 1/m of that
    vector = c.dim * COMPONENT_BYTES[c.quantization]
    if c.quantization == "none":
        return (vector + links) * c.store_overhead + c.payload_bytes
    return (vector + links) * c.store_overhead


def plan(load: Load, c: Costs) -> Plan:
    s, w = load.searches_s, load.web_share
    new_per_web = load.candidates * (1.0 - load.hit_rate)  # candidates downloaded and embedded
    images_s = s * (1.0 + w * new_per_web)  # one query image per search, plus new candidates

    decode_img_s = c.decode_workers * 1000.0 / c.decode_ms
    pod_img_s = min(c.gpu_img_s, decode_img_s)
    embed_pods = max(c.min_embed_pods, math.ceil(images_s / (pod_img_s * c.embed_headroom)))

    downloads_s = s * w * new_per_web
    gateway_cpu = (s * c.query_ms + downloads_s * c.candidate_ms) / 1000.0
    pods_cpu = math.ceil(gateway_cpu / (c.gateway_cpus * c.gateway_headroom))
    # Little's law: downloads in flight = rate x time, capped per pod by the setting.
    pods_dl = math.ceil(downloads_s * c.download_s / c.download_concurrency)
    gateway_pods = max(c.min_gateway_pods, pods_cpu, pods_dl)

    per_point = ram_per_point(c)
    store_ram = load.gallery_size * per_point * c.replication
    nodes_ram = math.ceil(store_ram / (c.node_ram_gib * GIB * c.node_ram_usable))
    ann_s = s  # one ANN query per search (gallery-only and web searches alike)
    lookups_s = s * w * load.candidates  # each web candidate not in the in-memory cache asks the store by URL
    writes_s = downloads_s  # every newly embedded image is upserted
    busy = (ann_s + lookups_s * c.url_lookup_cost) / c.store_qps_node + writes_s * c.replication / c.ingest_node
    nodes_load = math.ceil(busy / c.store_headroom)
    store_nodes = max(c.min_store_nodes, nodes_ram, nodes_load)

    result = Plan(
        load=load, images_s=images_s, embed_pod_img_s=pod_img_s,
        embed_pod_limit="GPU" if c.gpu_img_s <= decode_img_s else "CPU decode",
        embed_pods=embed_pods, gateway_cpu=gateway_cpu, downloads_s=downloads_s,
        gateway_pods_cpu=pods_cpu, gateway_pods_downloads=pods_dl, gateway_pods=gateway_pods,
        outbound_mib_s=downloads_s * c.image_kib / 1024.0, ram_per_point=per_point,
        store_ram_gib=store_ram / GIB, store_nodes_ram=nodes_ram, store_ann_s=ann_s,
        store_lookups_s=lookups_s, store_writes_s=writes_s, store_nodes_load=nodes_load,
        store_nodes=store_nodes,
    )
    name, ratio = bottleneck(result, c)
    return replace(result, bottleneck=name, bottleneck_ratio=ratio)


def bottleneck(p: Plan, c: Costs) -> tuple[str, float]:
    """The constraint that needs the most multiples of the minimum deployment.

    Each constraint's demand is divided by what the minimum deployment (2 embed pods,
    2 gateway pods, 3 store peers) offers at its headroom; the largest ratio is the
    first to saturate as S or M grows. Below 1.0 the minimum deployment suffices.
    """
    embed_capacity = c.min_embed_pods * p.embed_pod_img_s * c.embed_headroom
    demands = {
        f"embed {p.embed_pod_limit}": p.images_s / embed_capacity,
        "gateway CPU": p.gateway_cpu / (c.min_gateway_pods * c.gateway_cpus * c.gateway_headroom),
        "outbound downloads": p.downloads_s * c.download_s / (c.min_gateway_pods * c.download_concurrency),
        "store RAM": p.store_ram_gib / (c.min_store_nodes * c.node_ram_gib * c.node_ram_usable),
        "store CPU": _store_busy(p, c) / (c.min_store_nodes * c.store_headroom),
    }
    name = max(demands, key=lambda k: demands[k])
    return name, demands[name]


def _store_busy(p: Plan, c: Costs) -> float:
    return ((p.store_ann_s + p.store_lookups_s * c.url_lookup_cost) / c.store_qps_node
            + p.store_writes_s * c.replication / c.ingest_node)


def _fmt_count(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def table(plans: list[Plan]) -> str:
    head = ("| S/s | M | web | images/s | embed pods | gateway pods (cpu / dl) | out MiB/s "
            "| store GiB | store nodes (ram / load) | first bottleneck (x minimum) |")
    rows = [head, "|" + "---|" * 10]
    for p in plans:
        ld = p.load
        rows.append(
            f"| {ld.searches_s:g} | {_fmt_count(ld.gallery_size)} | {ld.web_share:.0%} | {p.images_s:,.0f} "
            f"| {p.embed_pods} | {p.gateway_pods} ({p.gateway_pods_cpu} / {p.gateway_pods_downloads}) "
            f"| {p.outbound_mib_s:,.0f} | {p.store_ram_gib:,.0f} | {p.store_nodes} ({p.store_nodes_ram} / "
            f"{p.store_nodes_load}) | {p.bottleneck} ({p.bottleneck_ratio:.2g}x) |"
        )
    return "\n".join(rows)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=_floats, default=[10.0, 100.0, 1000.0], help="S, comma-separated")
    parser.add_argument("--gallery-size", type=_floats, default=[1e5, 1e7, 1e8], help="M, comma-separated")
    parser.add_argument("--web-share", type=_floats, default=[0.1, 1.0], help="w, comma-separated")
    parser.add_argument("--candidates", type=int, default=100, help="C (GATEWAY_MAX_CANDIDATES)")
    parser.add_argument("--hit-rate", type=float, default=0.3, help="h: share of web candidates already known")
    for f in Costs.__dataclass_fields__.values():  # every cost is overridable by name
        if f.name in ("quantization",):
            parser.add_argument("--quantization", choices=sorted(COMPONENT_BYTES), default=f.default)
        else:
            kind = int if isinstance(f.default, int) else float
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default)
    parser.add_argument("--json", action="store_true", help="one JSON object per plan instead of the table")
    args = parser.parse_args(argv)
    costs = Costs(**{name: getattr(args, name) for name in Costs.__dataclass_fields__})
    if not 0.0 <= args.hit_rate <= 1.0:
        parser.error(f"--hit-rate {args.hit_rate} must be between 0 and 1")
    plans = [plan(Load(s, m, w, args.candidates, args.hit_rate), costs)
             for s, m, w in itertools.product(args.searches, args.gallery_size, args.web_share)]
    if args.json:
        for p in plans:
            print(json.dumps(asdict(p)))
        return
    print(f"Costs: {json.dumps(asdict(costs))}")
    print(f"C = {args.candidates}, h = {args.hit_rate:g}; RAM per point (one replica): "
          f"{ram_per_point(costs):,.0f} B\n")
    print(table(plans))


if __name__ == "__main__":
    main()

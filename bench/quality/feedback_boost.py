"""The stored feedback boost (issue 22, item 2), measured on real features.

    python -m bench.quality.feedback_boost --layout idx --path /usr/share/datasets/fashion-mnist --limit 2000
    python -m bench.quality.feedback_boost --layout folder --path var/quality/near-dup-100-q2

The queries are split in two halves (alternately, in the benchmark's order: the
near-duplicate layout lists a source's query views one after the other, so two views of
one design land in different halves). For each query of the marking half the first 10
results of the plain ranking are marked from the ground truth: relevant when a hit, not
relevant otherwise (what a user with perfect judgement would click). Then both halves are
ranked again with the marks applied exactly as the gateway applies them (the score changes
come from ``search_gateway.search.feedback_boost.nudges``, the gateway's own function, with
``BoostLimits``: the marks of queries with cosine >= threshold to the new one, at most
``max_marks`` of them, each result moved by at most ``weight``), and Recall@10 and mAP@R are
compared with the plain ranking. The held-out half is the figure that matters: marks help
or harm queries nobody marked for.

Embedding: squeezenet's image tower exported to ONNX fp32 with the server's own exporter
and run in this process (bench.quality.in_process: the same figures as through the server).
Ranking: the whole gallery by exact cosine (the gateway ranks what the gallery and the web
returned; a result outside those is not moved there, so the gateway's gains are at most these).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import layouts
from bench.quality.in_process import embed_refs, onnx_runner
from bench.quality.layouts import Benchmark
from bench.quality.metrics import MetricTotals
from bench.quality.retrieval import _normalised
from search_gateway.search.feedback_boost import BoostLimits, nudges


@dataclass(frozen=True)
class StoredMark:
    result: str
    relevant: bool
    similarity: float


def _export(model: str, folder: Path) -> Path:
    from embed_server.models import CARDS, family
    from embed_server.models.weights import bundled_weights_folder
    from embed_server.runtimes import onnx_export

    card = CARDS[model]
    towers = family(model).load_pretrained(bundled_weights_folder(card))
    path = folder / f"{model}-fp32.onnx"
    onnx_export.export_image_tower(towers.image, card.preprocess.image_size, path)
    return path


def _ranked(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def _marks(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, marking: Sequence[int],
           top: int) -> tuple[np.ndarray, list[list[tuple[int, bool]]]]:
    """Per marking query: its vector and its first ``top`` results (ignored ones left out), judged."""
    judged = []
    for i in marking:
        q = benchmark.queries[i]
        order = [int(g) for g in _ranked(gallery @ queries[i]) if int(g) not in q.ignore][:top]
        judged.append([(g, g in q.relevant) for g in order])
    return queries[list(marking)], judged


def _figures(benchmark: Benchmark, gallery: np.ndarray, queries: np.ndarray, which: Sequence[int],
             mark_vectors: np.ndarray | None, judged: list[list[tuple[int, bool]]], limits: BoostLimits) -> dict[str, float]:
    totals = MetricTotals((10,))
    touched = moved = 0
    for i in which:
        q = benchmark.queries[i]
        scores = gallery @ queries[i]
        if mark_vectors is not None and limits.weight > 0:
            sims = mark_vectors @ queries[i]
            # The store's query: the most similar marked queries above the threshold, at most max_marks marks.
            near: list[StoredMark] = []
            for m in np.argsort(-sims, kind="stable"):
                if sims[m] < limits.threshold or len(near) >= limits.max_marks:
                    break
                near.extend(StoredMark(str(g), relevant, float(sims[m])) for g, relevant in judged[m])
            changes = nudges(near[: limits.max_marks], limits)
            touched += bool(changes)
            for result, change in changes.items():
                scores[int(result)] += change
            moved += len(changes)
        totals.add(_ranked(scores), q.relevant, q.ignore)
    summary = totals.summary()
    return {"recall@10": float(summary["recall@10"] or 0), "map@r": float(summary["map@r"] or 0),
            "queries": int(summary["queries"] or 0), "touched": touched, "moved": moved}


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.quality.feedback_boost`: Recall@10 and mAP@R with and without stored marks."""
    parser = argparse.ArgumentParser(prog="python -m bench.quality.feedback_boost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="squeezenet")
    parser.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
    parser.add_argument("--path", required=True, type=Path)
    parser.add_argument("--limit", type=int, help="idx only: the first N images")
    parser.add_argument("--weights", default="0.01,0.02,0.03,0.05", help="boost weights to try (comma-separated)")
    parser.add_argument("--thresholds", default="0.8,0.9,0.95", help="similarity thresholds to try")
    parser.add_argument("--max-marks", type=int, default=50, help="marks one search reads (GATEWAY_FEEDBACK_BOOST_MARKS)")
    parser.add_argument("--marked-top", type=int, default=10, help="results marked per marking query")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args(argv)
    from embed_server.models import CARDS

    card = CARDS[args.model]
    if not card.bundled_weights:
        print(f"feedback_boost: {args.model} has no weights in a package; only real weights say anything here",
              file=sys.stderr)
        return 2
    (benchmark,) = layouts.read(args.layout, args.path, limit=args.limit)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        run = onnx_runner(_export(args.model, Path(scratch)), args.threads)
        gallery, _ = embed_refs(benchmark.gallery, card.preprocess, run)
        # A query that is a gallery image (Fashion-MNIST: each image against the others) is embedded once.
        index = {ref: i for i, ref in enumerate(benchmark.gallery)}
        others = [q.image for q in benchmark.queries if q.image not in index]
        extra, _ = embed_refs(others, card.preprocess, run) if others else (np.zeros((0, gallery.shape[1])), None)
        extra_at = {ref: i for i, ref in enumerate(others)}
        queries = np.stack([gallery[index[q.image]] if q.image in index else extra[extra_at[q.image]]
                            for q in benchmark.queries])
    gallery, queries = _normalised(gallery), _normalised(queries)
    print(f"{benchmark.name}: {len(benchmark.queries)} queries, {len(benchmark.gallery)} gallery images, "
          f"embedded in {time.perf_counter() - start:.0f} s", flush=True)
    marking = list(range(0, len(benchmark.queries), 2))
    held_out = list(range(1, len(benchmark.queries), 2))
    mark_vectors, judged = _marks(benchmark, gallery, queries, marking, args.marked_top)
    relevant_marks = sum(r for marks in judged for _, r in marks)
    print(f"marks: {sum(map(len, judged))} from {len(marking)} queries ({relevant_marks} relevant)", flush=True)
    rows: list[dict[str, Any]] = []
    plain = BoostLimits(weight=0.0)
    base = {half: _figures(benchmark, gallery, queries, which, None, judged, plain)
            for half, which in (("held-out", held_out), ("marked", marking))}
    for threshold in (float(t) for t in args.thresholds.split(",")):
        for weight in (float(w) for w in args.weights.split(",")):
            limits = BoostLimits(weight=weight, threshold=threshold, max_marks=args.max_marks)
            for half, which in (("held-out", held_out), ("marked", marking)):
                got = _figures(benchmark, gallery, queries, which, mark_vectors, judged, limits)
                row = {"half": half, "threshold": threshold, "weight": weight, **got,
                       "recall@10_plain": base[half]["recall@10"], "map@r_plain": base[half]["map@r"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| half | threshold | weight | queries moved | R@10 plain | R@10 boost | mAP@R plain | mAP@R boost |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['half']} | {r['threshold']} | {r['weight']} | {r['touched']}/{r['queries']} | "
              f"{100 * r['recall@10_plain']:.2f} | {100 * r['recall@10']:.2f} | "
              f"{100 * r['map@r_plain']:.2f} | {100 * r['map@r']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fit the naive relevance-feedback formula's weights (a, b, c) once per dataset with
Qdrant's own trainer, the `qdrant-relevance-feedback` package (PyPI, 0.1.1).

    python -m bench.quality --layout folder --path var/quality/near-dup-fit ... \\
        --feedback-export var/quality/near-dup-fit.npz
    /path/to/venv-with-the-package/bin/python -m bench.quality.fit_feedback var/quality/near-dup-fit.npz

The package pulls torch, pandas and rich and trains against a qdrant-client collection,
so it runs in a venv of its own (not a dependency of the gateway, which only uses the
three numbers: search/refine.py NAIVE_WEIGHTS). Here the collection is qdrant-client's
local mode holding the exported gallery; the retriever is the exported query vector,
and the feedback model is the ground truth (1 for a hit, 0 otherwise): the marks a
perfect user gives, which is what our feedback items carry. The package mines one
context pair per query from the first `--context` results (the 10 a user marks) and
fits the formula on the rest of the first `--limit`.

This module imports only numpy, qdrant-client and the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def relevant_of(data: Any) -> list[frozenset[int]]:
    """The export's hits per query (a CSR layout: offsets into one array of gallery indices)."""
    offsets, values = data["relevant_offsets"], data["relevant_values"]
    return [frozenset(int(v) for v in values[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.fit_feedback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="the .npz that --feedback-export wrote")
    parser.add_argument("--limit", type=int, default=50, help="results per query to train on (default %(default)s)")
    parser.add_argument("--context", type=int, default=10, help="results a user marks (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--queries", default="",
                        help="first:last (0-based, last excluded) queries to train on, e.g. to keep them apart from "
                             "the ones measured (default: all)")
    args = parser.parse_args(argv)

    from qdrant_client import QdrantClient, models
    from qdrant_relevance_feedback import RelevanceFeedback
    from qdrant_relevance_feedback.feedback import Feedback
    from qdrant_relevance_feedback.retriever import Retriever

    data = np.load(args.export)
    gallery, queries = data["gallery"].astype(np.float32), data["queries"].astype(np.float32)
    relevant = relevant_of(data)

    class ByIndex(Retriever):
        def embed_query(self, query: Any) -> Any:
            return queries[int(query)].tolist()

    class GroundTruth(Feedback):
        def score(self, query: Any, responses: list[Any]) -> list[float]:
            return [1.0 if int(r) in relevant[int(query)] else 0.0 for r in responses]

    client = QdrantClient(":memory:")
    client.create_collection("fit", vectors_config=models.VectorParams(size=gallery.shape[1],
                                                                       distance=models.Distance.COSINE))
    client.upsert("fit", [models.PointStruct(id=i, vector=row.tolist(), payload={"idx": i})
                          for i, row in enumerate(gallery)])
    trainer = RelevanceFeedback(ByIndex(), GroundTruth(), client, "fit", payload_key="idx")
    first, _, last = args.queries.partition(":")
    chosen = list(range(len(queries)))[slice(int(first) if first else None, int(last) if last else None)]
    weights = trainer.train(queries=chosen, limit=args.limit, context_limit=args.context, epochs=args.epochs)
    print(json.dumps({"export": str(args.export), "queries": len(chosen), "gallery": len(gallery), **weights}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

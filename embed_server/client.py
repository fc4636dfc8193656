"""`python -m embed_server.client`: a small command-line client, for trying a server.

    python -m embed_server.client models
    python -m embed_server.client embed --model clip photo.jpg other.png
    python -m embed_server.client text --model clip "a geometric wolf tattoo"
    python -m embed_server.client attention --model dinov2 query.jpg candidate.jpg

Against a server with TLS: --tls-ca (and --tls-cert/--tls-key for mutual TLS); its
bearer token is read from EMBED_AUTH_TOKEN, never from the command line (which `ps` shows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc
import numpy as np
from pydantic import SecretStr

from service_common.grpc_security import (
    ClientSecurity,
    SecurityConfigError,
    sync_channel,
)
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address (default %(default)s)")
    parser.add_argument("--tls-ca", type=Path, help="CA of the server's certificate: TLS (default: plaintext)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="its private key")
    parser.add_argument("--tls-server-name", default="", help="name to verify in the server's certificate")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the served models")
    for name in ("embed", "text", "attention"):
        sub = commands.add_parser(name)
        sub.add_argument("--model", default="clip")
        sub.add_argument("inputs", nargs="+")
    args = parser.parse_args(argv)
    token = os.environ.get("EMBED_AUTH_TOKEN", "").strip()
    try:
        security = ClientSecurity(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key,
                                  server_name=args.tls_server_name, token=SecretStr(token) if token else None,
                                  token_variable="EMBED_AUTH_TOKEN")
        channel = sync_channel(args.target, security)
    except SecurityConfigError as exc:
        # The shared sentences name the gateway's variables; here they are flags.
        message = str(exc)
        for variable, flag in (("GRPC_TLS_CA_FILE", "--tls-ca"), ("GRPC_TLS_CERT_FILE", "--tls-cert"),
                               ("GRPC_TLS_KEY_FILE", "--tls-key"), ("GRPC_TLS_SERVER_NAME", "--tls-server-name")):
            message = message.replace(variable, flag)
        parser.error(message)

    with channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)  # type: ignore[no-untyped-call]  # no stubs for grpc modules
        try:
            print(json.dumps(_run(stub, args), indent=2))
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


def _run(stub: embed_pb2_grpc.EmbedServiceStub, args: argparse.Namespace) -> object:
    if args.command == "models":
        response = stub.ListModels(embed_pb2.ListModelsRequest(), timeout=10)
        return [
            {
                "name": m.name,
                "state": embed_pb2.ModelState.Name(m.state),
                "weights": embed_pb2.WeightsSource.Name(m.weights),
                "runtime": m.runtime,
                "device": m.device,
                "precision": m.precision,
                "global_dim": m.global_dim,
                "grid": [m.grid_height, m.grid_width],
                "text": m.supports_text,
                "batches": m.image_batches.batches,
            }
            for m in response.models
        ]
    if args.command == "text":
        response = stub.EmbedText(embed_pb2.EmbedTextRequest(model=args.model, texts=args.inputs), timeout=60)
        return _vectors(response, args.inputs)
    images = [Path(path).read_bytes() for path in args.inputs]
    if args.command == "embed":
        return _vectors(stub.Embed(embed_pb2.EmbedRequest(model=args.model, images=images), timeout=60), args.inputs)
    request = embed_pb2.CrossAttentionRequest(model=args.model, query_image=images[0], candidate_images=images[1:])
    response = stub.CrossAttention(request, timeout=60)
    return {
        "weights": embed_pb2.WeightsSource.Name(response.provenance.weights),
        "query_grid": [response.query_grid_height, response.query_grid_width],
        "candidates": [
            {"input": path, "overall_similarity": c.overall_similarity, "global_similarity": c.global_similarity}
            for path, c in zip(args.inputs[1:], response.candidates, strict=True)
        ],
    }


def _vectors(response: embed_pb2.EmbedResponse, labels: list[str]) -> object:
    vectors = to_numpy(response.embeddings)
    return {
        "model": response.provenance.model,
        "weights": embed_pb2.WeightsSource.Name(response.provenance.weights),
        "runtime": response.provenance.runtime,
        "dim": int(vectors.shape[1]),
        "vectors": {label: np.round(v[:4], 4).tolist() + ["..."] for label, v in zip(labels, vectors, strict=True)},
    }


if __name__ == "__main__":
    sys.exit(main())

"""Golden outputs: what each tiny model answers for two fixed images, pinned per runtime.

A change that moves a model's outputs (preprocessing, the random-weight builder, the ONNX
export, a tokenizer) fails here, naming the model and runtime that moved. The pinned
values live in tests/embed_server/golden/<model>.<runtime>.json: the global vectors of
both images, the grid and the first patch tokens' first values, and for a model with a
text tower the vectors of two fixed texts. All from seed 0, on the CPU in fp32.

When a move is intended, rewrite the files and commit them with the change:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/embed_server/test_golden_outputs.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image, ImageDraw

from service_common.model_registry import get_card, list_models
from service_common.tensors import to_numpy
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc
from tests.embed_server.conftest import embed_server
from tests.support.background import wait_for_health
from tests.support.images import encode

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TEXTS = ["a rose tattoo", "geometric wolf, fine line"]
# Patch tokens pinned: a few spread over each image's grid, the first few values of each.
PATCH_TOKENS, PATCH_VALUES = 5, 8
# fp32 on the CPU: the same code gives the same numbers to far better than this on any
# x86 build of torch or ONNX Runtime; a real change moves them by orders of magnitude more.
ABS_TOLERANCE = 1e-4


def _drawn(variant: int) -> bytes:
    """A fixed picture of lines, rings and blocks (not square, so crop and squash differ),
    as PNG so that no codec's rounding enters the pinned values."""
    image = Image.new("RGB", (320, 256), (245, 240, 230) if variant == 0 else (20, 30, 60))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        shade = (40 * i % 256, 255 - 30 * i, (90 + 50 * i * (variant + 1)) % 256)
        if variant == 0:
            draw.ellipse((20 + 12 * i, 10 + 10 * i, 300 - 12 * i, 246 - 10 * i), outline=shade, width=4)
        else:
            draw.rectangle((40 * i, 32 * i, 40 * i + 60, 32 * i + 40), fill=shade)
            draw.line((0, 256 - 32 * i, 320, 32 * i), fill=(255, 255 - 20 * i, 0), width=3)
    return encode(image, "PNG")


IMAGES = [_drawn(0), _drawn(1)]


# The ONNX variant exports every model first (about 25 s): `make test-fast` leaves it out.
@pytest.fixture(scope="module", params=["torch", pytest.param("onnx", marks=pytest.mark.slow)])
def runtime_stub(request: pytest.FixtureRequest) -> Iterator[tuple[str, embed_pb2_grpc.EmbedServiceStub]]:
    """Every tiny model on one runtime, on the CPU, seed 0 (what the golden files hold)."""
    runtime = request.param
    with embed_server(EMBED_RUNTIME=runtime, EMBED_DEVICE="cpu", EMBED_SEED="0") as server:
        with grpc.insecure_channel(server.target) as channel:
            wait_for_health(channel)
            yield runtime, embed_pb2_grpc.EmbedServiceStub(channel)


def _outputs(stub: embed_pb2_grpc.EmbedServiceStub, model: str) -> dict[str, Any]:
    vectors = to_numpy(stub.Embed(embed_pb2.EmbedRequest(model=model, images=IMAGES), timeout=60).embeddings)
    grid, patch_heads = None, []
    for image in IMAGES:
        reply = stub.EmbedPatches(embed_pb2.EmbedPatchesRequest(model=model, image=image), timeout=60)
        grid = [reply.grid_height, reply.grid_width]
        patches = to_numpy(reply.patches)
        spread = np.linspace(0, len(patches) - 1, PATCH_TOKENS).round().astype(int)
        patch_heads.append(patches[spread, :PATCH_VALUES])
    outputs: dict[str, Any] = {"global_dim": int(vectors.shape[1]), "grid": grid, "global": vectors,
                               "patch_head": np.stack(patch_heads)}
    if get_card(model).supports_text:
        outputs["text"] = to_numpy(stub.EmbedText(embed_pb2.EmbedTextRequest(model=model, texts=TEXTS), timeout=60).embeddings)
    return outputs


def _write(path: Path, outputs: dict[str, Any]) -> None:
    # Seven decimals: below fp32's resolution for unit-vector values, far below the tolerance.
    plain = {key: np.round(value.astype(np.float64), 7).tolist() if isinstance(value, np.ndarray) else value
             for key, value in outputs.items()}
    # One output per line, so a diff of a rewritten file shows which outputs moved.
    lines = [f"  {json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}" for key, value in plain.items()]
    path.parent.mkdir(exist_ok=True)
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _moved(pinned: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line per output that no longer matches what is pinned."""
    problems = [f"{key}: pinned {pinned.get(key)}, now {now.get(key)}" for key in ("global_dim", "grid")
                if pinned.get(key) != now.get(key)]
    if set(pinned) != set(now):
        problems.append(f"outputs: pinned {sorted(pinned)}, now {sorted(now)}")
    for key in ("global", "patch_head", "text"):
        if key not in pinned or key not in now:
            continue
        old, new = np.asarray(pinned[key], np.float64), np.asarray(now[key], np.float64)
        if old.shape != new.shape:
            problems.append(f"{key}: pinned shape {old.shape}, now {new.shape}")
            continue
        worst = float(np.abs(old - new).max())
        if worst > ABS_TOLERANCE:
            a, b = old.ravel(), new.ravel()
            cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            problems.append(f"{key}: up to {worst:.2e} away (cosine {cosine:.6f})")
    return problems


@pytest.mark.parametrize("model", list_models())
def test_outputs_match_the_golden_file(runtime_stub: tuple[str, embed_pb2_grpc.EmbedServiceStub], model: str) -> None:
    runtime, stub = runtime_stub
    path = GOLDEN / f"{model}.{runtime}.json"
    now = _outputs(stub, model)
    if UPDATE:
        _write(path, now)
    assert path.exists(), f"no golden file for {model} on {runtime}: run with UPDATE_GOLDEN=1 to write {path}"
    problems = _moved(json.loads(path.read_text()), now)
    assert not problems, (
        f"{model} on {runtime} moved from {path.relative_to(GOLDEN.parents[2])}:\n  " + "\n  ".join(problems)
        + "\nIf the change is intended, rerun with UPDATE_GOLDEN=1 and commit the rewritten file."
    )

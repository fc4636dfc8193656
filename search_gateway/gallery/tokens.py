"""Compact patch tokens for the gallery: a bounded count of tokens, quantised.

A point's patch tokens (one vector per cell of the model's grid, `EmbedPatches`) are
what stage two of a search compares (`search/rerank.py`). Stored as they come they
cost grid x dimension x 4 bytes a point (squeezenet 169 x 512 x 4 = 346 KB, more than
the image), so the gallery keeps them compacted. A compaction is named
``<selection>[-<quantisation>]``:

- selection: ``full`` (every token), ``poolN`` (N x N average pooling over the grid,
  stride N, the last row and column pooled over what is left: 13 x 13 -> 7 x 7 = 49
  at N = 2), or ``topN`` (the N tokens least like the image's mean token: the
  distinctive parts, not the background that is close to everything);
- quantisation: ``fp32`` (the default when none is named), ``fp16``, ``int8`` (per
  token: scaled so that its largest magnitude is 127, rounded) or ``binary`` (the
  sign of each dimension, 8 dimensions a byte).

Stage two's scores are cosines between tokens, normalised per token, so a per-token
scale cancels out: int8 stores no scale (one byte a dimension, nothing else), and
binary tokens decode to +-1. `bytes_per_point` is what the store keeps for a point's
tokens (data only, before the engine's own overhead); docs/benchmarks.md has the
Recall@1 each compaction keeps ("Compact patch tokens").

Pure numpy, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

Quantisation = Literal["fp32", "fp16", "int8", "binary"]
QUANTISATIONS: tuple[Quantisation, ...] = ("fp32", "fp16", "int8", "binary")
_BYTES_PER_DIMENSION = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "binary": 0.125}
_SELECTION = re.compile(r"^(full|pool([2-9])|top([1-9][0-9]{0,3}))$")


class TokenCompactionError(ValueError):
    """A compaction name or a token matrix that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Compaction:
    """How a point's tokens are kept (see the module's docstring); `parse` builds one."""

    selection: str  # "full", "pool<N>" or "top<N>"
    quantisation: Quantisation = "fp32"

    @property
    def name(self) -> str:
        return self.selection if self.quantisation == "fp32" else f"{self.selection}-{self.quantisation}"

    def token_count(self, grid: tuple[int, int]) -> int:
        """How many tokens a point of this grid keeps."""
        cells = grid[0] * grid[1]
        if self.selection == "full":
            return cells
        if self.selection.startswith("pool"):
            side = int(self.selection[4:])
            return -(-grid[0] // side) * -(-grid[1] // side)
        return min(cells, int(self.selection[3:]))

    def bytes_per_point(self, grid: tuple[int, int], dimension: int) -> int:
        """Bytes of one point's compacted tokens (binary: rounded up to whole bytes a token)."""
        per_token = -(-dimension // 8) if self.quantisation == "binary" else \
            int(dimension * _BYTES_PER_DIMENSION[self.quantisation])
        return self.token_count(grid) * per_token


def parse(name: str) -> Compaction:
    """``full``, ``int8`` (= ``full-int8``), ``pool2-int8``, ``top32-binary``...: a `Compaction`, or
    TokenCompactionError."""
    selection, dash, quantisation = name.strip().lower().partition("-")
    if selection in QUANTISATIONS and not dash:  # "int8" is short for "full-int8"
        selection, quantisation = "full", selection
    elif not dash:
        quantisation = "fp32"
    if not _SELECTION.match(selection) or quantisation not in QUANTISATIONS:
        raise TokenCompactionError(
            f"unknown token compaction {name!r}: a selection (full, pool2..pool9, top1..top9999) optionally "
            f"followed by -{' / -'.join(QUANTISATIONS)}, e.g. pool2-int8")
    return Compaction(selection, quantisation)


def select(tokens: np.ndarray, grid: tuple[int, int], selection: str) -> np.ndarray:
    """The kept tokens, float32 (count x dimension), row-major over the grid where it has one."""
    matrix = np.asarray(tokens, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != grid[0] * grid[1] or matrix.shape[0] == 0:
        raise TokenCompactionError(f"patch tokens of shape {matrix.shape} do not fill a {grid[0]}x{grid[1]} grid")
    if selection == "full":
        return matrix
    if selection.startswith("pool"):
        side = int(selection[4:])
        cube = matrix.reshape(grid[0], grid[1], -1)
        rows = [cube[r:r + side] for r in range(0, grid[0], side)]
        pooled = [block[:, c:c + side].mean(axis=(0, 1)) for block in rows for c in range(0, grid[1], side)]
        return np.stack(pooled).astype(np.float32)
    count = min(matrix.shape[0], int(selection[3:]))
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    typicality = unit @ mean  # cosine-like closeness to the image's average token
    keep = np.sort(np.argsort(typicality, kind="stable")[:count])  # grid order kept
    return matrix[keep]


def encode(tokens: np.ndarray, grid: tuple[int, int], compaction: Compaction) -> bytes:
    """The point's tokens as the store keeps them (`decode` reads them back)."""
    kept = select(tokens, grid, compaction.selection)
    if compaction.quantisation == "fp32":
        return kept.astype("<f4").tobytes()
    if compaction.quantisation == "fp16":
        return kept.astype("<f2").tobytes()
    if compaction.quantisation == "int8":
        return quantise_int8(kept).tobytes()
    return np.packbits(kept > 0, axis=1).tobytes()


def decode(data: bytes, dimension: int, compaction: Compaction) -> np.ndarray:
    """Stored tokens back as float32 (count x dimension), ready for cosine scoring."""
    if compaction.quantisation == "binary":
        width = -(-dimension // 8)
        if not data or len(data) % width:
            raise TokenCompactionError(f"{len(data)} bytes are not whole binary tokens of dimension {dimension}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8).reshape(-1, width), axis=1)[:, :dimension]
        return (bits.astype(np.float32) * 2.0 - 1.0)
    dtype = {"fp32": "<f4", "fp16": "<f2", "int8": "i1"}[compaction.quantisation]
    values = np.frombuffer(data, dtype=dtype)
    if values.size == 0 or values.size % dimension:
        raise TokenCompactionError(f"{len(data)} bytes are not whole {compaction.quantisation} tokens "
                                   f"of dimension {dimension}")
    return values.reshape(-1, dimension).astype(np.float32)


def compact(tokens: np.ndarray, grid: tuple[int, int], compaction: Compaction) -> np.ndarray:
    """What stage two sees of stored tokens: `decode(encode(...))` without the bytes."""
    return decode(encode(tokens, grid, compaction), int(np.asarray(tokens).shape[1]), compaction)


def quantise_int8(tokens: np.ndarray) -> np.ndarray:
    """Per token: scaled so that its largest magnitude is 127, rounded (the scale is not kept)."""
    scale = np.maximum(np.abs(tokens).max(axis=1, keepdims=True), 1e-12) / 127.0
    quantised: np.ndarray = np.clip(np.rint(tokens / scale), -127, 127).astype(np.int8)
    return quantised

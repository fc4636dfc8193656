"""What every model family provides, and the bookkeeping they share.

A family knows one architecture: how to build it with seeded random weights (full
size for demos and benchmarks, tiny for tests), how to load pretrained weights from a
local folder, and how to wrap it as an image tower (and a text tower, when it has
one) with a fixed contract, independent of the runtime that will execute it:

    image tower: pixels (B, 3, S, S) float32 -> (global (B, D), patches (B, N, P)),
                 both L2-normalised along the last axis, patches without CLS/registers
    text tower:  token ids (B, L) int64      -> (B, D), L2-normalised
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from embed_server.models.cards import Architecture, ModelCard


@dataclass
class Towers:
    """A family's torch modules, before any runtime takes them."""

    image: nn.Module
    text: nn.Module | None = None

    def __post_init__(self) -> None:
        # eval() on the wrappers themselves too: exporters restore the training flag of
        # the module they were given, recursively (pitfall met with ONNX export).
        self.image.eval().requires_grad_(False)
        if self.text is not None:
            self.text.eval().requires_grad_(False)


class ModelFamily(Protocol):
    card: ModelCard

    def build_random(self, architecture: Architecture) -> Towers:
        """The family's architecture with random weights (seeded by the caller)."""
        ...

    def load_pretrained(self, folder: Path) -> Towers:
        """Weights and configuration from a local folder, never the network."""
        ...


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    # An explicit formula rather than F.normalize: it exports to the same few ONNX ops
    # under every exporter, and the epsilon keeps an all-zero row finite.
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=1e-12)

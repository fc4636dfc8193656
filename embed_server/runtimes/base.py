"""The contract between the server and whatever executes a model."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runtime(Protocol):
    name: str        # "torch" or "onnx"
    device: str      # "cpu", "cuda:0"
    precision: str   # "fp32", "fp16", "int8"
    providers: tuple[str, ...]  # what actually executes (ONNX execution providers; torch: the device)

    def run_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) float32 -> (global (B, D), patches (B, N, P)), float32, L2-normalised."""
        ...

    def run_text(self, token_ids: np.ndarray) -> np.ndarray:
        """(B, L) int64 -> (B, D) float32, L2-normalised. Raises if there is no text tower."""
        ...

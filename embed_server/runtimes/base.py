"""The contract between the server and whatever executes a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from embed_server.models.base import Towers


class Runtime(Protocol):
    name: str        # "torch" or "onnx"
    device: str      # "cpu", "cuda:0"
    precision: str   # "fp32", "fp16", "int8-dynamic", "int8-static" (runtimes.int8_modes)
    providers: tuple[str, ...]  # what actually executes (ONNX execution providers; torch: the device)
    weights_fingerprint: str    # hash of the weights that answer (models.weights.fingerprint_towers)
    fallback: str    # why torch runs a model that was meant for ONNX Runtime; "" otherwise

    def run_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) float32 -> (global (B, D), patches (B, N, P)), float32, L2-normalised."""
        ...

    def run_text(self, token_ids: np.ndarray) -> np.ndarray:
        """(B, L) int64 -> (B, D) float32, L2-normalised. Raises if there is no text tower."""
        ...


class ModelWeights:
    """A model's torch towers, built on first use and at most once (an ONNX runtime
    whose exports are cached never builds them, nor imports torch), and their
    fingerprint, hashed at most once."""

    def __init__(self, source: str, build: Callable[[], Towers]) -> None:
        self.source = source  # which weights the settings ask for (models.weights)
        self._build = build
        self._towers: Towers | None = None
        self._fingerprint: str | None = None

    @property
    def built(self) -> bool:
        return self._towers is not None

    def towers(self) -> Towers:
        if self._towers is None:
            self._towers = self._build()
        return self._towers

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from embed_server.models.weights import fingerprint_towers

            self._fingerprint = fingerprint_towers(self.towers())
        return self._fingerprint

    def release(self) -> None:
        """Drop the torch modules (hundreds of MB) once nothing needs them."""
        self._towers = None

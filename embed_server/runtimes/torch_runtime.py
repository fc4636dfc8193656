"""Eager PyTorch: the reference runtime, and the fallback where ONNX Runtime is absent."""

from __future__ import annotations

import numpy as np
import torch

from embed_server.models.base import Towers


def configure_torch_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        # Inter-op parallelism only oversubscribes the cores the intra-op pool already
        # uses; forward passes of different models run on their own threads anyway.
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work has started: keep what is there


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"EMBED_DEVICE={requested} but no CUDA device is visible to torch")
    return device


class TorchRuntime:
    name = "torch"

    def __init__(self, towers: Towers, device: torch.device, *, weights_fingerprint: str = "", fallback: str = "") -> None:
        self.weights_fingerprint = weights_fingerprint
        self.fallback = fallback
        # Half precision on GPUs (tensor cores); fp32 on CPUs, where torch's fp16/bf16
        # paths measured slower than fp32 on this project's machines.
        self._dtype = torch.float16 if device.type == "cuda" else torch.float32
        self._device = device
        self.device = str(device)
        self.precision = "fp16" if self._dtype == torch.float16 else "fp32"
        self.providers: tuple[str, ...] = (self.device,)
        self._image = towers.image.to(device=device, dtype=self._dtype)
        self._text = towers.text.to(device=device, dtype=self._dtype) if towers.text is not None else None

    def run_image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self._device, self._dtype)
            global_vec, patches = self._image(batch)
            return _numpy(global_vec), _numpy(patches)

    def run_text(self, token_ids: np.ndarray) -> np.ndarray:
        if self._text is None:
            raise RuntimeError("this model has no text tower")
        with torch.inference_mode():
            return _numpy(self._text(torch.from_numpy(token_ids).to(self._device)))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.to(dtype=torch.float32).cpu().numpy()

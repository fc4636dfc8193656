"""How much memory a GPU has and how much is in use, for the metrics.

The whole device, every process and allocator together (what decides an out-of-memory
error), read through torch when it already drives the GPU, else through nvidia-smi: an
ONNX Runtime server on a warm export cache never imports torch, and importing it (and
creating a CUDA context) just to read two numbers would cost more memory than it reports.
Nothing on a machine without a GPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 5.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class DeviceMemory:
    used_bytes: int
    total_bytes: int


def device_memory(device: str) -> DeviceMemory | None:
    """The memory of `device` ("cuda:0"), or None when it cannot be read (not a GPU,
    no torch CUDA context and no nvidia-smi, nvidia-smi failing)."""
    if not device.startswith("cuda"):
        return None
    index = int(device.partition(":")[2] or 0)
    return _from_torch(index) or _from_nvidia_smi(index)


def _from_torch(index: int) -> DeviceMemory | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    try:
        free, total = torch.cuda.mem_get_info(index)
    except RuntimeError as exc:
        log.debug("torch cannot read the memory of cuda:%d: %s", index, exc)
        return None
    return DeviceMemory(int(total - free), int(total))


def _from_nvidia_smi(index: int) -> DeviceMemory | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits", "-i", _physical_id(index)],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
        used, total = (int(float(value)) for value in out.strip().splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.debug("nvidia-smi cannot read the memory of GPU %d: %s", index, exc)
        return None
    return DeviceMemory(used * MIB, total * MIB)


def _physical_id(index: int) -> str:
    # cuda:N counts the devices CUDA_VISIBLE_DEVICES leaves visible; nvidia-smi counts
    # them all, and takes the entries of that variable (indices or UUIDs) as they are.
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return visible[index] if index < len(visible) else str(index)

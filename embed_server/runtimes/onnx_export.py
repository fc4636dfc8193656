"""Exporting towers to ONNX, and the on-disk cache of exports.

An export is keyed by model name, weights fingerprint (a hash of the tensors that
were exported), tower, precision, opset and the export format version, so a restart
reuses it and other weights never do. Each file has a sidecar JSON written last,
holding the file's size and SHA-256: a file without its sidecar, or whose bytes do not
match it (a crash mid-write, a truncated copy), is rebuilt, never served. A new file
enters the cache only once `verify` accepted it (see export_check).

Knowing the weights fingerprint takes the weights, and so torch. For a warm start
without torch the cache also records, per model, which fingerprint a weights source
(a checkpoint's files, or a seed with the library versions) built last time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

OPSET = 18
# Bump when the exported graphs change meaning (inputs, outputs, wrappers).
EXPORT_FORMAT = 2

IMAGE_INPUTS = ("pixels",)
IMAGE_OUTPUTS = ("image_embedding", "patch_tokens")  # not "embedding": see pitfall 4
TEXT_INPUTS = ("input_ids",)
TEXT_OUTPUTS = ("text_embedding",)

# Tracing and torch.export keep process-wide state (dispatch mode stacks, the tracing
# state) and fail when two threads export at once; models load on parallel threads,
# and an export is a one-off, so exports take turns.
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExportKey:
    model: str
    fingerprint: str
    tower: str       # "image" or "text"
    precision: str   # "fp32", "fp16", "int8"
    # How a derived file was made, where one precision has several recipes: int8 is
    # "dynamic" or "static-<calibration method>-<recipe>-<calibration set>" (static_int8.variant).
    variant: str = ""

    @property
    def stem(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.fingerprint)
        precision = f"{self.precision}-{self.variant}" if self.variant else self.precision
        return f"{self.model}-{safe}-{self.tower}-{precision}-opset{OPSET}-v{EXPORT_FORMAT}"


class ExportCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: ExportKey) -> Path:
        return self.folder / f"{key.stem}.onnx"

    def lookup(self, key: ExportKey) -> Path | None:
        """The cached file if it is complete and intact; None otherwise."""
        path = self.path(key)
        sidecar = path.with_suffix(".json")
        if not path.exists() or not sidecar.exists():
            return None
        try:
            meta = json.loads(sidecar.read_text())
            if path.stat().st_size == meta["bytes"] and _sha256(path) == meta["sha256"]:
                return path
        except (OSError, ValueError, KeyError):
            pass
        log.warning("export cache: %s is incomplete or corrupt; rebuilding it", path.name)
        return None

    def get_or_create(
        self, key: ExportKey, create: Callable[[Path], None], verify: Callable[[Path], None] | None = None
    ) -> tuple[Path, bool]:
        """(path, True) from the cache, or (path, False) after `create(tmp_path)` made it
        and `verify(tmp_path)` returned; whatever either raises leaves nothing cached."""
        cached = self.lookup(key)
        if cached is not None:
            return cached, True
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{key.stem}.", suffix=".tmp")
        os.close(descriptor)
        try:
            started = time.perf_counter()
            create(Path(temporary))
            if verify is not None:
                verify(Path(temporary))
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        size = path.stat().st_size
        meta = {"bytes": size, "sha256": _sha256(path), "created": time.time()}
        sidecar_tmp = path.with_suffix(".json.tmp")
        sidecar_tmp.write_text(json.dumps(meta))
        os.replace(sidecar_tmp, path.with_suffix(".json"))
        log.info("export cache: wrote %s (%.1f MB) in %.1f s", path.name, size / 1e6, time.perf_counter() - started)
        return path, False


    def remembered_fingerprint(self, model: str, source: str) -> str | None:
        """The weights fingerprint `source` built when this model was last exported."""
        try:
            record = json.loads(self._source_record(model, source).read_text())
            return str(record["weights_fingerprint"]) if record["source"] == source else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember_fingerprint(self, model: str, source: str, fingerprint: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = self._source_record(model, source)
        temporary = record.with_name(f".{record.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps({"model": model, "source": source, "weights_fingerprint": fingerprint}))
        os.replace(temporary, record)

    def _source_record(self, model: str, source: str) -> Path:
        return self.folder / f"{model}-source-{hashlib.sha256(source.encode()).hexdigest()[:24]}.weights.json"


def export_image_tower(tower: nn.Module, image_size: int, target: Path) -> None:
    import torch

    example = (torch.zeros(2, 3, image_size, image_size),)
    _export(tower, example, IMAGE_INPUTS, IMAGE_OUTPUTS, target)


def export_text_tower(tower: nn.Module, text_length: int, target: Path) -> None:
    import torch

    example = (torch.ones(2, text_length, dtype=torch.int64),)
    _export(tower, example, TEXT_INPUTS, TEXT_OUTPUTS, target)


def _export(
    module: nn.Module, example: tuple, inputs: tuple[str, ...], outputs: tuple[str, ...], target: Path
) -> None:
    with _EXPORT_LOCK:
        _export_unlocked(module, example, inputs, outputs, target)


def _export_unlocked(
    module: nn.Module, example: tuple, inputs: tuple[str, ...], outputs: tuple[str, ...], target: Path
) -> None:
    import torch

    module.eval()
    dynamic_axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    try:
        # The TorchScript exporter is fast and handles four of the five families.
        torch.onnx.export(
            module, example, str(target), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001 - any exporter failure means: try the other one
        # DINOv2 with registers interpolates its position embeddings with antialiased
        # bicubic upsampling, which only the dynamo exporter can express.
        log.info("TorchScript export failed (%s); using the dynamo exporter", str(exc).splitlines()[0][:200])
        module.eval()
        torch.onnx.export(
            module, example, str(target), input_names=list(inputs), output_names=list(outputs),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), opset_version=OPSET,
            dynamo=True, external_data=False, verbose=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the weight matrices (activations quantised per
    batch at run time).

    - MatMulConstBOnly: activation-by-activation products (attention scores) stay fp32;
      they carry the outliers int8 would clip.
    - per_channel + reduce_range (7-bit weights): CPUs without VNNI multiply u8 by s8
      with an instruction that saturates its 16-bit sums; a full 8-bit range overflows
      there (SigLIP's pooled vector fell to cosine 0.975 against fp32 on such a CPU;
      0.9994 with these options). Exports may be made on one machine and served on
      another, so the safe choice is made everywhere.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
        extra_options={"MatMulConstBOnly": True},
    )


def convert_fp16(source: Path, target: Path) -> None:
    """fp16 weights and arithmetic for GPUs, keeping float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()

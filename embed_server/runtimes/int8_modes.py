"""Which int8 a model gets: dynamic (ranges per batch) or static (calibrated ranges).

EMBED_INT8_MODE=auto takes the flavour measured better for the model: static where
it was at least as accurate as dynamic on the near-duplicate benchmark and faster,
dynamic otherwise (accuracy first: int8 is chosen for speed, but a faster file that
ranks differently from fp32 is not the same model). The figures are in
docs/benchmarks.md ("int8: dynamic against static"), from `python -m bench.int8_compare`.
"""

from __future__ import annotations

from typing import Literal

Int8Mode = Literal["dynamic", "static"]

# Measured with random full-size weights (python -m bench.int8_compare, 2 shared vCPUs
# with AVX-512 VNNI, 40 near-duplicate queries); static against dynamic:
# - clip: b8 speed +1%, least global cosine to fp32 0.99962 vs 0.99966, mAP 37.63 vs 37.97,
#   top-1 agreement 95% both: dynamic.
# - dinov3: speed +11%, least patch cosine 0.99949 vs 0.99964 (random weights make its
#   global vectors all alike, so no retrieval figure): dynamic, the speed within noise.
# - siglip: speed level, least global cosine 0.99609 vs 0.99720, top-1 agreement 95.0% vs
#   97.5%: dynamic.
# A model missing here (dinov2, dinov2-reg: not measured) keeps dynamic.
AUTO: dict[str, Int8Mode] = {
    "clip": "dynamic",
    "dinov3": "dynamic",
    "siglip": "dynamic",
}


# Models that never serve int8: EMBED_PRECISION=int8 serves them in fp32 with ONNX
# Runtime (and says so: ListModels reports fp32). Measured on real weights
# (docs/benchmarks.md, "Real weights: squeezenet"): ONNX Runtime's int8 convolutions
# were never faster than fp32 on this AVX2 CPU (dynamic 5-12x slower, static level to
# 5x slower) and moved the vectors more than the export check allows (least global
# cosine 0.968-0.979), for equal retrieval figures: nothing to buy with that risk.
NO_INT8: dict[str, str] = {
    "squeezenet": "int8 convolutions measured slower than fp32 and off by more than the export check allows",
}


def resolve(model: str, setting: str) -> Int8Mode:
    """The flavour `model` runs for EMBED_INT8_MODE=`setting` (auto, dynamic or static)."""
    if setting == "auto":
        return AUTO.get(model, "dynamic")
    if setting not in ("dynamic", "static"):
        raise ValueError(f"unknown int8 mode {setting!r}; valid: auto, dynamic, static")
    return setting  # type: ignore[return-value]


def precision_label(mode: Int8Mode) -> str:
    """What ListModels and Provenance say: which int8 answers, as vectors of the two differ."""
    return f"int8-{mode}"

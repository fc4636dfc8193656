"""What the embed server and the scraper answer, as the gateway's own types.

The backend clients (``backends.py``) convert protobuf into these, so nothing past
them (routes, the search stages, the captioner, the attention pictures) touches
generated code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class Provenance:
    """Which model answered, with which weights and how: echoed by every embed reply."""

    model: str
    weights: str  # "pretrained", "random" or "unspecified"
    runtime: str
    device: str
    precision: str
    weights_fingerprint: str


@dataclass(frozen=True, eq=False)
class Embeddings:
    """One vector per input, in request order, and who computed them."""

    vectors: np.ndarray
    provenance: Provenance


@dataclass(frozen=True)
class ModelDescription:
    """One model the embed server serves (a ``ListModels`` entry)."""

    name: str
    supports_text: bool
    ready: bool
    architecture: str
    global_dim: int
    patch_dim: int
    patch_size: int
    grid: tuple[int, int]
    image_size: int
    state: str  # "ready", "loading", "failed", ...
    weights: str  # "pretrained", "random" or "unspecified"
    runtime: str
    device: str
    precision: str
    error: str  # the embed server's own words on why a model failed; for the log only
    # Which weights exactly (the gallery keeps vectors per fingerprint); "" when not told.
    weights_fingerprint: str = ""


@dataclass(frozen=True, eq=False)
class Patches:
    """One image's patch tokens (an ``EmbedPatches`` reply): a row per grid cell, row-major."""

    grid: tuple[int, int]
    tokens: np.ndarray  # (grid height * grid width, dimension) float32
    provenance: Provenance


@dataclass(frozen=True, eq=False)
class PatchMatches:
    """One candidate's patch-to-patch comparison with the query image."""

    query_grid: tuple[int, int]
    grid: tuple[int, int]
    overall_similarity: float
    global_similarity: float
    # Per query patch (rows): its best candidate patches, as flat indices on the
    # candidate grid, and their cosines, best first.
    top_indices: np.ndarray
    top_scores: np.ndarray
    # Per query patch, its best cosine.
    max_similarity: np.ndarray
    # Query patches x candidate patches, when it was asked for.
    similarity_matrix: np.ndarray | None


@dataclass(frozen=True, eq=False)
class CrossAttention:
    """A query image against candidates: one :class:`PatchMatches` per candidate, in order."""

    candidates: tuple[PatchMatches, ...]
    provenance: Provenance


@dataclass(frozen=True)
class Candidate:
    """An image URL the scraper found, with what it knows about it."""

    url: str
    source_url: str
    platform: str
    title: str
    engine: str
    # Headers to send when downloading ``url`` (e.g. the platform's Referer).
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

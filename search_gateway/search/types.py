"""The values one search passes from stage to stage, up to the HTTP edge.

A candidate is found (:class:`Candidate`), fetched and checked (:class:`FetchedImage`),
embedded or found in the cache (:class:`EmbeddedImage`), scored
(:class:`RankedResult`), and the search ends with a :class:`SearchOutcome`. All are
frozen: a stage makes a new value rather than editing the one it was given. They
become JSON in one place, ``search_gateway/http/search_json.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from search_gateway.clients.replies import Candidate, PatchMatches, Provenance
from search_gateway.fetch.colour import ColourFacts
from search_gateway.fetch.images import PreparedImage

SOURCES: tuple[str, ...] = ("gallery", "web")


@dataclass(frozen=True)
class SearchQuery:
    """What was asked: an image (searched by its caption and ranked by its vector), a
    text, or a gallery point (``like``: its stored vector, nothing downloaded or embedded)."""

    model: str
    max_results: int
    include_attention: bool
    image: PreparedImage | None = None
    text: str | None = None
    like: str | None = None
    # Where results come from: the gallery (what the product already knows), the web, or both.
    sources: frozenset[str] = frozenset(SOURCES)
    # Results scored below this cosine are left out (gallery: in the store query).
    min_score: float | None = None
    # Gallery results must carry every one of these machine tags (applied in the store query).
    tags: tuple[str, ...] = ()
    # Who asks (tenants.py): private collections and ``like`` ids are the caller's only.
    tenant: str = "local"
    # The gallery collections searched ("web" and the caller's private ones, already
    # checked to exist); None: web and every collection of the caller.
    collections: tuple[str, ...] | None = None
    # Two-stage search: the best this many results are re-ranked by patch tokens
    # (search/rerank_stage.py); 0: off (the default, docs/benchmarks.md says why).
    rerank_k: int = 0
    # True: re-ranked by the model's default (rerank not given), from stored tokens only.
    rerank_stored_only: bool = False
    # Refinement by example (search/refine.py): gallery result ids marked relevant / not.
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    # Colour and placement filters (search/colour_filter.py): results must have this colour
    # scheme (gallery: in the store query; web: by the colour facts read when downloaded),
    # are reordered by nearness of their palette to ``palette`` ("#rrggbb"), and (gallery)
    # carry ANY of the ``placement`` tags.
    color: str | None = None
    palette: str | None = None
    placement: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchedImage:
    """A candidate downloaded and checked as an image, ready to embed."""

    candidate: Candidate
    image: PreparedImage

    @property
    def sha256(self) -> str:
        return self.image.sha256


@dataclass(frozen=True, eq=False)
class EmbeddedImage:
    """A candidate with its unit vector; ``embed_bytes`` is None when the vector came
    from the cache by URL (nothing was downloaded)."""

    candidate: Candidate
    sha256: str
    vector: np.ndarray
    embed_bytes: bytes | None
    # (width, height) of the downloaded image, kept in the gallery; None when not downloaded.
    size: tuple[int, int] | None = None
    # Read from its pixels where it was decoded (fetch/colour.py); None when they were not read.
    colour: ColourFacts | None = None


@dataclass(frozen=True)
class RankedResult:
    """A candidate scored against the query; ``attention`` when patch attention was asked."""

    candidate: Candidate
    sha256: str
    score: float
    attention: PatchMatches | None = None
    # "gallery" when the store answered it (no download), "web" when this search found it.
    source: str = "web"
    # Machine style/subject tags with their scores (gallery results only).
    tags: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # The gallery collection it is (or will be) a point of; a private one has its tenant,
    # whose signed blob link is its thumbnail (an uploaded file has no URL).
    collection: str = "web"
    tenant: str | None = None
    # Its gallery point id (for like=<id>); None: the one it has in "web".
    point_id: str | None = None
    # After re-ranking: ``score`` is the combined one, these its two parts (None: not re-ranked).
    global_score: float | None = None
    local_score: float | None = None
    # The change stored feedback marks made to ``score`` (search/feedback_boost.py); None: none.
    feedback: float | None = None
    # Its colour facts (None: not known: a point written before them, or a cached web image)
    # and body placement tags (gallery results of text-tower models only).
    color_scheme: str | None = None
    palette: tuple[str, ...] = ()
    palette_shares: tuple[float, ...] = ()
    placement: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # With palette=: how near its palette is to the colour asked, 0 to 1 (search/colour_filter.py).
    palette_match: float | None = None
    # Results that never rot: its source URL was found gone or changed (link health), and the
    # SHA-256 of the thumbnail the gallery keeps for it (a web point's; None: none kept).
    stale: bool = False
    thumbnail: str | None = None


@dataclass(frozen=True)
class SearchStats:
    """What happened to the candidates of one search."""

    candidates_found: int = 0
    from_cache: int = 0
    downloaded: int = 0
    embedded: int = 0
    ranked: int = 0
    duplicates: int = 0
    failed_by_reason: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    scraper_error: str | None = None
    embed_error: str | None = None
    attention_error: str | None = None
    # Results the gallery gave at once, web candidates it already knew (not downloaded),
    # and why it could not answer (the search then ran on the web alone).
    from_gallery: int = 0
    gallery_known: int = 0
    gallery_error: str | None = None
    # Why the results keep stage one's order although re-ranking was asked.
    rerank_error: str | None = None

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())


@dataclass(frozen=True)
class SearchOutcome:
    """The answer to one search (before the HTTP edge adds thumbnail links)."""

    caption: str
    caption_source: str  # the captioner that answered, "text" or "fallback"
    results: tuple[RankedResult, ...]
    model: str
    patch_attention: bool
    # True when the time budget ended, or a backend failed, before every candidate was ranked.
    partial: bool
    stats: SearchStats
    timings_ms: Mapping[str, float]
    # Who computed the query's vector; None only if no embed reply was seen for it.
    provenance: Provenance | None
    # True when the best results were re-ranked by patch tokens.
    reranked: bool = False
    # The query's unit vector (for the reply's query_ref); None when no embed reply gave it.
    query_vector: np.ndarray | None = None
    # Set when the search was refined by marked examples (positive / negative).
    refinement: Refinement | None = None
    # Sentences the reply must explain (e.g. a model without a text tower gives no placement).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refinement:
    """How marked examples refined a search: the method that ran (after any fallback,
    search/refine.py) and how many marks of each kind were used."""

    method: str
    positive: int
    negative: int


# Progress of a running search, for /search/stream.
@dataclass(frozen=True)
class CaptionReady:
    caption: str
    source: str


@dataclass(frozen=True)
class CandidatesFound:
    found: int


@dataclass(frozen=True)
class Downloaded:
    downloaded: int
    failed: int


@dataclass(frozen=True)
class RankedSoFar:
    ranked: int
    best: tuple[tuple[str, float], ...]  # (url, score) of the best few so far


@dataclass(frozen=True)
class GalleryFound:
    """What the gallery answered, before any web work (``error`` when it could not)."""

    results: tuple[RankedResult, ...]
    error: str | None = None


SearchEvent = GalleryFound | CaptionReady | CandidatesFound | Downloaded | RankedSoFar

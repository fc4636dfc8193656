"""The JSON of a search: the body of ``POST /search`` and the events of ``/search/stream``.

The one place where the pipeline's typed values become dicts (the fields are the
seed frontend's, then the extensions; docs/gateway.md shows them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_gateway.gallery.spaces import result_id
from search_gateway.search import attention
from search_gateway.search.types import (
    CandidatesFound,
    CaptionReady,
    Downloaded,
    GalleryFound,
    RankedResult,
    RankedSoFar,
    SearchEvent,
    SearchOutcome,
    SearchStats,
)

# The link to a result's thumbnail, signed by the gateway.
ThumbnailLink = Callable[[RankedResult], str]


def event(e: SearchEvent, thumbnail_link: ThumbnailLink) -> dict[str, Any]:
    if isinstance(e, GalleryFound):
        out: dict[str, Any] = {"event": "gallery", "results": [result(r, thumbnail_link) for r in e.results]}
        if e.error:
            out["error"] = e.error
        return out
    if isinstance(e, CaptionReady):
        return {"event": "caption", "caption": e.caption, "caption_source": e.source}
    if isinstance(e, CandidatesFound):
        return {"event": "candidates", "found": e.found}
    if isinstance(e, Downloaded):
        return {"event": "downloaded", "downloaded": e.downloaded, "failed": e.failed}
    if isinstance(e, RankedSoFar):
        return {"event": "ranked", "ranked": e.ranked,
                "best": [{"url": url, "score": round(score, 6)} for url, score in e.best]}
    raise TypeError(f"not a search event: {e!r}")


def outcome(o: SearchOutcome, thumbnail_link: ThumbnailLink) -> dict[str, Any]:
    body: dict[str, Any] = {
        "caption": o.caption,
        "caption_source": o.caption_source,
        "results": [result(r, thumbnail_link) for r in o.results],
        "embedding_model": o.model,
        "patch_attention_enabled": o.patch_attention,
        "partial": o.partial,
        "reranked": o.reranked,
        "stats": stats(o.stats),
        "timings": dict(o.timings_ms),
    }
    if o.provenance is not None:
        # Random weights rank by nothing: the page says so.
        body["embedding_weights"] = o.provenance.weights
    if o.refinement is not None:  # positive / negative were given (search/refine.py)
        body["refinement"] = {"method": o.refinement.method, "positive": o.refinement.positive,
                              "negative": o.refinement.negative}
    if o.notes:
        body["notes"] = list(o.notes)
    return body


def result(r: RankedResult, thumbnail_link: ThumbnailLink) -> dict[str, Any]:
    c = r.candidate
    out: dict[str, Any] = {
        "url": c.url, "source_url": c.source_url, "platform": c.platform, "title": c.title, "engine": c.engine,
        "score": round(r.score, 6),
        # "gallery": the store answered it; "web": this search found it. The id is the
        # image's gallery point (for like=<id>), once the background writer has stored it.
        "source": r.source, "id": r.point_id or result_id(r.sha256), "collection": r.collection,
    }
    if r.global_score is not None:  # re-ranked: score is the combined one
        out["global_score"] = round(r.global_score, 6)
    if r.local_score is not None:
        out["local_score"] = round(r.local_score, 6)
    elif r.global_score is not None:  # re-ranking reached it without patch tokens: the notes say why
        out["local_score"] = None
    if r.feedback is not None:  # the change stored feedback marks made to score (feedback_boost.py)
        out["feedback"] = round(r.feedback, 6)
    if r.tags:
        out["tags"] = dict(r.tags)  # machine tags (zero-shot), with their scores
    # Colour facts read from the pixels (absent: not known) and body placement tags.
    if r.color_scheme is not None:
        out["color_scheme"] = r.color_scheme
    if r.palette:
        out["palette"] = list(r.palette)
    if r.palette_match is not None:
        out["palette_match"] = r.palette_match
    if r.placement:
        out["placement"] = dict(r.placement)
    if r.stale:  # its source URL is gone or serves another picture: the thumbnail is the gallery's copy
        out["stale"] = True
    if r.attention is not None:
        out["patch_attention"] = attention.summarize(r.attention)
    out["thumbnail_url"] = thumbnail_link(r)
    return out


def stats(s: SearchStats) -> dict[str, Any]:
    out: dict[str, Any] = {
        "candidates_found": s.candidates_found, "from_cache": s.from_cache, "downloaded": s.downloaded,
        "embedded": s.embedded, "ranked": s.ranked, "duplicates": s.duplicates, "failed": s.failed,
        "failed_by_reason": dict(s.failed_by_reason),
        "from_gallery": s.from_gallery, "gallery_known": s.gallery_known,
    }
    for name, error in (("scraper_error", s.scraper_error), ("embed_error", s.embed_error),
                        ("attention_error", s.attention_error), ("gallery_error", s.gallery_error),
                        ("rerank_error", s.rerank_error)):
        if error:
            out[name] = error
    return out

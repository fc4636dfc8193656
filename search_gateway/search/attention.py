"""Patch-attention summaries and pictures (Pillow + numpy only; no matplotlib in the gateway)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from search_gateway.clients.replies import PatchMatches

# A query patch whose best match is at least this cosine counts as a strong match.
STRONG_MATCH = 0.5


def summary_of(max_similarity: np.ndarray) -> dict[str, float]:
    best = np.asarray(max_similarity, dtype=np.float64).ravel()
    if best.size == 0:
        return {"mean_max_similarity": 0.0, "max_similarity": 0.0, "min_similarity": 0.0,
                "std_max_similarity": 0.0, "strong_match_ratio": 0.0}
    return {
        "mean_max_similarity": round(float(best.mean()), 6),
        "max_similarity": round(float(best.max()), 6),
        "min_similarity": round(float(best.min()), 6),
        "std_max_similarity": round(float(best.std()), 6),
        "strong_match_ratio": round(float((best >= STRONG_MATCH).mean()), 6),
    }


def summarize(matches: PatchMatches) -> dict[str, Any]:
    """The seed's ``patch_attention`` object, plus grid shapes and the global cosine."""
    (qh, qw), (ch, cw) = matches.query_grid, matches.grid
    return {
        "overall_similarity": round(matches.overall_similarity, 6),
        "global_similarity": round(matches.global_similarity, 6),
        # The seed's frontend reads one number per grid (its grids were square).
        "query_grid_size": qh,
        "candidate_grid_size": ch,
        "query_grid": [qh, qw],
        "candidate_grid": [ch, cw],
        "attention_summary": summary_of(matches.max_similarity),
    }


def correspondences(matches: PatchMatches, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` strongest query-patch -> candidate-patch matches, best first."""
    indices = matches.top_indices
    scores = matches.top_scores
    if indices.size == 0:
        return []
    query_w = matches.query_grid[1]
    best_per_query = scores[:, 0]
    order = np.argsort(-best_per_query)[:limit]
    cw = max(1, matches.grid[1])
    out = []
    for qi in order:
        ci = int(indices[qi, 0])
        out.append({
            "query_patch_idx": int(qi),
            "query_patch_coord": [int(qi) // query_w, int(qi) % query_w],
            "candidate_patch_idx": ci,
            "candidate_patch_coord": [ci // cw, ci % cw],
            "similarity": round(float(scores[qi, 0]), 6),
            "top_candidate_coords": [[int(c) // cw, int(c) % cw] for c in indices[qi]],
            "similarity_scores": [round(float(s), 6) for s in scores[qi]],
        })
    return out


# An "inferno"-like ramp: black -> purple -> orange -> pale yellow.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along the ramp."""
    v = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    t = (v - lo)[..., None]
    rgb: np.ndarray = (_RAMP[lo] * (1 - t) + _RAMP[hi] * t).astype(np.uint8)
    return rgb


def _normalise(grid: np.ndarray) -> np.ndarray:
    lo, hi = float(grid.min()), float(grid.max())
    return np.zeros_like(grid) if hi - lo < 1e-9 else (grid - lo) / (hi - lo)


def _overlay(img: Image.Image, grid: np.ndarray, alpha: float = 0.5) -> Image.Image:
    heat = Image.fromarray(colormap(_normalise(grid))).resize(img.size, Image.Resampling.BILINEAR)
    return Image.blend(img.convert("RGB"), heat, alpha)


def _side_by_side(left: Image.Image, right: Image.Image, height: int = 256, gap: int = 12) -> tuple[Image.Image, int]:
    def fit(img: Image.Image) -> Image.Image:
        w = max(1, round(img.width * height / img.height))
        return img.resize((w, height), Image.Resampling.BICUBIC)

    a, b = fit(left), fit(right)
    canvas = Image.new("RGB", (a.width + gap + b.width, height), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + gap, 0))
    return canvas, a.width + gap


def png_data_url(img: Image.Image) -> str:
    out = io.BytesIO()
    img.save(out, "PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def heatmap_picture(query: Image.Image, candidate: Image.Image, matches: PatchMatches) -> Image.Image:
    """Both images with their patch heat: each query patch's best cosine, and for the
    candidate, the best cosine any query patch reaches there."""
    qh, qw = matches.query_grid
    q_heat = matches.max_similarity.reshape(qh, qw)
    ch, cw = matches.grid
    if matches.similarity_matrix is not None:
        c_heat = matches.similarity_matrix.max(axis=0).reshape(ch, cw)
    else:  # fall back on the top-k lists when the full matrix was not sent
        c_heat = np.full(ch * cw, np.nan, dtype=np.float32)
        idx, sc = matches.top_indices, matches.top_scores
        for i, s in zip(idx.ravel(), sc.ravel(), strict=True):
            c_heat[i] = s if np.isnan(c_heat[i]) else max(c_heat[i], s)
        c_heat = np.nan_to_num(c_heat, nan=float(np.nanmin(c_heat)) if np.isfinite(c_heat).any() else 0.0).reshape(ch, cw)
    picture, _ = _side_by_side(_overlay(query, q_heat), _overlay(candidate, c_heat))
    return picture


def correspondence_picture(query: Image.Image, candidate: Image.Image, patches: PatchMatches,
                           matches: list[dict[str, Any]]) -> Image.Image:
    """Lines from query patch centres to their best candidate patch, brighter = stronger."""
    picture, offset = _side_by_side(query, candidate)
    height = picture.height
    qh, qw = patches.query_grid
    ch, cw = patches.grid
    q_width = offset - 12
    c_width = picture.width - offset
    draw = ImageDraw.Draw(picture)
    scores = np.array([m["similarity"] for m in matches] or [0.0])
    norm = _normalise(scores)
    for match, strength in zip(matches, norm, strict=False):
        (qr, qc), (cr, cc) = match["query_patch_coord"], match["candidate_patch_coord"]
        start = ((qc + 0.5) * q_width / qw, (qr + 0.5) * height / qh)
        end = (offset + (cc + 0.5) * c_width / cw, (cr + 0.5) * height / ch)
        color = tuple(int(x) for x in colormap(np.array(0.35 + 0.65 * strength)))
        draw.line([start, end], fill=color, width=2)
        for x, y in (start, end):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=color, width=2)
    return picture

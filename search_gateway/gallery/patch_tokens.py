"""Each gallery point's compact patch tokens, kept beside its space for stage two of a search.

Where: a sibling space per image space and compaction, ``<model>@tokens-<compaction>``
(`tokens_space`), keyed by the image point's own id (same collection, content hash and
tenant), holding the tokens in the record layout (gallery/schema.py):
``{"kind": "tokens", "compaction", "grid": [h, w], "dimension", "tokens": <base64>}``.
Its vector is a constant of dimension 1: the space is only ever read by id, never searched.

Why not a named multivector ("patches", MAX_SIM) in the image points themselves, which both
engines have (qdrant-edge 0.9 and the Qdrant server): (1) a collection cannot get a new named
vector once created, so every existing space would have to be re-created and every point
re-embedded before a search had its tokens again, where a sibling fills in point by point
while the space serves; (2) the engines' MAX_SIM is the ``maxsim`` score only, while the
measured default is ``mutual`` mixed with the global score (search/rerank.py), which a
store query cannot express; (3) their uint8 storage has no per-token scale (an int8 token
shifted by 128 no longer has its cosines), so the engine would keep fp16 at best, twice
the int8 bytes; (4) a new compaction is a new sibling, the images untouched. The price is one
more read by id per search (the K results' tokens), which the bench counts (docs/benchmarks.md,
"Compact patch tokens").

Deleting: the token points carry the image's collection and tenant, so the same filter that
deletes a collection's or a tenant's images deletes their tokens (`forget`); the tokens of a
point deleted alone are found by the same id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search_gateway.clients.backends import EmbedClient
from search_gateway.errors import GatewayError
from search_gateway.gallery import tokens
from search_gateway.gallery.base import GalleryFilter, GalleryPoint, GalleryStore, VectorSpace
from search_gateway.gallery.link import GalleryLink

log = logging.getLogger(__name__)

TOKENS = "@tokens"
KIND = "tokens"
# Decided on squeezenet's real weights (docs/benchmarks.md, "Compact patch tokens"): the
# fewest bytes within about a point of full tokens' two-stage Recall@1.
DEFAULT_COMPACTION = tokens.parse("binary")


def tokens_space(space: VectorSpace, compaction: tokens.Compaction = DEFAULT_COMPACTION) -> VectorSpace:
    """Where the tokens of ``space``'s points live under ``compaction``: beside it, never in it."""
    return VectorSpace(f"{space.model}{TOKENS}-{compaction.name}", space.weights_fingerprint, 1)


@dataclass(frozen=True)
class PatchTokens:
    """One image's tokens as `EmbedPatches` served them: (grid cells x dimension), row-major."""

    grid: tuple[int, int]
    tokens: np.ndarray


class TokenStore:
    """Writes and reads the compacted tokens of a space's points (see the module's docstring)."""

    def __init__(self, store: GalleryStore, compaction: tokens.Compaction = DEFAULT_COMPACTION) -> None:
        self.store = store
        self.compaction = compaction

    def point(self, image: GalleryPoint, patches: PatchTokens) -> GalleryPoint:
        """The token point of ``image`` (same id)."""
        data = tokens.encode(patches.tokens, patches.grid, self.compaction)
        return GalleryPoint(
            content_hash=image.content_hash, vector=(1.0,), collection=image.collection, tenant=image.tenant,
            record={"kind": KIND, "compaction": self.compaction.name, "grid": list(patches.grid),
                    "dimension": int(patches.tokens.shape[1]), "tokens": base64.b64encode(data).decode("ascii")})

    async def put(self, space: VectorSpace, items: Sequence[tuple[GalleryPoint, PatchTokens]]) -> None:
        """Store (or replace) the tokens of these image points."""
        if items:
            await self.store.upsert(tokens_space(space, self.compaction), [self.point(p, t) for p, t in items])

    async def get(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> dict[str, np.ndarray]:
        """Stored tokens of these image points (float32, ready to score), by point id; a point
        without tokens (or whose token point names another image) is left out."""
        if not points:
            return {}
        wanted = {p.id: p for p in points}
        found = await self.store.retrieve(tokens_space(space, self.compaction), list(wanted))
        mine = [stored for stored in found if (image := wanted.get(stored.id)) is not None and
                (stored.collection, stored.tenant, stored.content_hash) ==
                (image.collection, image.tenant, image.content_hash)]  # never another's tokens
        # Decoding K points' tokens takes a few ms: on a worker thread, not the event loop.
        return await asyncio.to_thread(self._decoded, mine)

    def _decoded(self, points: Sequence[GalleryPoint]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for stored in points:
            matrix = self.decode(stored.record)
            if matrix is not None:
                out[stored.id] = matrix
        return out

    async def have(self, space: VectorSpace, ids: Sequence[str]) -> set[str]:
        """Which of these point ids have tokens stored (the backfill skips them)."""
        if not ids:
            return set()
        return {p.id for p in await self.store.retrieve(tokens_space(space, self.compaction), list(ids))
                if p.record.get("kind") == KIND}

    async def delete(self, space: VectorSpace, ids: Sequence[str]) -> None:
        await self.store.delete(tokens_space(space, self.compaction), ids)

    async def forget(self, space: VectorSpace, filter: GalleryFilter) -> None:
        """Delete the tokens of every image point ``filter`` matches (a collection, a tenant)."""
        await self.store.delete_where(tokens_space(space, self.compaction), filter)

    def decode(self, record: Mapping[str, object]) -> np.ndarray | None:
        if record.get("kind") != KIND or record.get("compaction") != self.compaction.name:
            return None
        dimension, data = record.get("dimension"), record.get("tokens")
        if not isinstance(dimension, int) or not isinstance(data, str):
            return None
        try:
            return tokens.decode(base64.b64decode(data, validate=True), dimension, self.compaction)
        except (binascii.Error, tokens.TokenCompactionError):
            return None  # damaged: the point is scored as one without tokens


# EmbedPatches calls of one batch in flight at once (one image a call: the embed server's
# batcher merges them), as search/rerank_stage.py does: the writer must not fill its queue.
CONCURRENCY = 4


async def embed_tokens(embed: EmbedClient, space: VectorSpace, images: Mapping[str, bytes], *,
                       timeout_s: float, concurrency: int = CONCURRENCY) -> dict[str, PatchTokens]:
    """The patch tokens of these images (by content hash) in ``space``'s weights; an image the
    embed server could not read, or answered with other weights, is left out (logged)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(data: bytes) -> PatchTokens | None:
        async with limit:
            try:
                reply = await embed.embed_patches(space.model, data, timeout=timeout_s)
            except GatewayError as exc:
                log.info("patch tokens not computed: %s", exc.log_detail or exc)
                return None
        if reply.provenance.weights_fingerprint != space.weights_fingerprint:
            log.info("patch tokens not kept: the embed server now serves other weights for %s", space.model)
            return None
        return PatchTokens(reply.grid, reply.tokens)

    hashes = list(images)
    found = await asyncio.gather(*(one(images[h]) for h in hashes))
    return {h: t for h, t in zip(hashes, found, strict=True) if t is not None}


class PatchWriter:
    """Computes and stores the tokens of image points just written (the gallery writer's
    ``patcher``, uploads and the reindex): `EmbedPatches` per image, one store write per batch."""

    def __init__(self, embed: EmbedClient, store: Callable[[], Awaitable[GalleryStore]], *, timeout_s: float,
                 compaction: tokens.Compaction = DEFAULT_COMPACTION) -> None:
        self._embed = embed
        self._store = store
        self._timeout_s = timeout_s
        self.compaction = compaction

    async def __call__(self, space: VectorSpace, points: Sequence[GalleryPoint], images: Mapping[str, bytes]) -> None:
        wanted = {p.content_hash: images[p.content_hash] for p in points if p.content_hash in images}
        found = await embed_tokens(self._embed, space, wanted, timeout_s=self._timeout_s)
        items = [(p, found[p.content_hash]) for p in points if p.content_hash in found]
        if items:
            await TokenStore(await self._store(), self.compaction).put(space, items)


def link_store(link: GalleryLink) -> Callable[[], Awaitable[GalleryStore]]:
    """The store behind ``link``, opened when asked (GalleryUnavailable while it is not)."""
    async def store() -> GalleryStore:
        return (await link.gallery()).store
    return store

"""A tenant's feedback marks, kept in the gallery store.

Where: one space of their own per model space, ``<model>@feedback`` with the model's
weights fingerprint and dimension (``marks_space``), holding points of the collection
``@feedback`` with the tenant set, the query's vector as the point's vector (so the marks
of queries like a new one are found by the store's own cosine search, with the tenant
filter), and the mark's fields in the record layout (gallery/schema.py):
``{"kind": "feedback", "result", "relevant", "model", "at"}``.

Why not in the model's own space beside the images: there a mark would be a private point
of its tenant, and every path that walks a tenant's private points would meet it (the
point sweep deletes private points without a collection record, collections/point_sweep.py;
a search or ``like`` trusts ``visible_to``). A space of its own is a different Qdrant
collection (a different shard of the embedded store): no image search, sweep, reindex or
migration ever reads it, so a mark can never come back as a result. (``visible_to`` refuses
records as well, search/gallery_source.py, should one ever land in an image space.)

Identity: a mark's id is derived from (tenant, the query, the result), so marking the same
result for the same query again replaces the earlier mark (an upsert of the same id: two
replicas racing leave one point, the later write's). The query is the quantised vector
the query_ref carries (feedback/query_refs.py), so the same query sent twice is one query.

Bound: at most ``max_marks`` per tenant over the spaces of the models served now. A new mark
is written, then counted; past the bound it is taken back and refused (collections are
counted the same way, http/collection_routes.py), so replicas writing at once never leave
more than the bound. Replacing a stored mark is always allowed.

Marks of weights the embed server no longer serves stay in their space: they are not
listed, not used, and not reached by ``forget_tenant`` (nothing can read them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore, VectorSpace, point_id
from search_gateway.gallery.link import GalleryLink

T = TypeVar("T")
MARKS = "@feedback"
KIND = "feedback"
# The spaces of the models the embed server serves now (wiring passes point_sweep's).
Spaces = Callable[[], Awaitable[Sequence[VectorSpace]]]
# GET /feedback: the most marks one page holds (the store's largest scroll page).
MAX_PAGE = 1000
# A cursor: a marks space's name (only a-z, 0-9, '-') and where in it the page starts.
CURSOR = re.compile(r"([a-z0-9-]{1,120})_([0-9a-f-]{36})?")


class TooManyMarks(Exception):
    """The tenant holds ``max_marks`` marks already."""


class BadCursor(ValueError):
    """Not a cursor this listing handed out (or its model's weights changed since)."""


def marks_space(space: VectorSpace) -> VectorSpace:
    """Where the marks of queries in ``space`` live: beside it, never in it."""
    return VectorSpace(f"{space.model}{MARKS}", space.weights_fingerprint, space.dimension)


@dataclass(frozen=True)
class Mark:
    id: str
    result: str
    relevant: bool
    model: str
    at: datetime

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "result": self.result, "relevant": self.relevant, "model": self.model,
                "at": self.at.astimezone(UTC).isoformat()}


@dataclass(frozen=True)
class NearMark:
    """A mark whose query is like the search's (search/feedback_boost.py reads these)."""

    result: str
    relevant: bool
    similarity: float


def _mark(point: GalleryPoint) -> Mark | None:
    r = point.record
    if r.get("kind") != KIND or not isinstance(r.get("result"), str) or not isinstance(r.get("relevant"), bool):
        return None
    at = r.get("at")
    return Mark(point.id, r["result"], r["relevant"], str(r.get("model", "")),
                datetime.fromisoformat(at) if isinstance(at, str) else datetime.fromtimestamp(0, UTC))


def _mine(point: GalleryPoint, tenant: str) -> bool:
    # The store's filter restricted the query already; checked again so that a filter built
    # wrong can never hand out another tenant's mark.
    return point.tenant == tenant and point.collection == MARKS


class MarkStore:
    def __init__(self, link: GalleryLink, spaces: Spaces, max_marks: int) -> None:
        self._link = link
        self._spaces = spaces
        self.max_marks = max_marks

    async def _store(self, call: Callable[[GalleryStore], Awaitable[T]]) -> T:
        try:
            answer = await call((await self._link.gallery()).store)
        except GalleryError as exc:
            self._link.failed(exc)
            raise
        self._link.answered()
        return answer

    async def _served(self) -> list[VectorSpace]:
        """The marks spaces of the models served now, in a stable order (for paging)."""
        return sorted((marks_space(s) for s in await self._spaces()), key=lambda s: s.name)

    @staticmethod
    def _filter(tenant: str) -> GalleryFilter:
        return GalleryFilter(collections=(MARKS,), tenant=tenant)

    async def put(self, tenant: str, space: VectorSpace, query: np.ndarray, query_digest: str, result: str,
                  relevant: bool) -> Mark:
        """Store (or replace) the tenant's mark of ``result`` for this query; TooManyMarks past the bound."""
        where = marks_space(space)
        key = hashlib.sha256(f"{query_digest}\0{result}".encode()).hexdigest()
        at = datetime.now(UTC)
        point = GalleryPoint(key, tuple(float(x) for x in query), MARKS, tenant, record={
            "kind": KIND, "result": result, "relevant": relevant, "model": space.model, "at": at.isoformat()})

        async def write(store: GalleryStore) -> bool:
            known = bool(await store.retrieve(where, [point.id]))
            await store.upsert(where, [point])
            if known or not self.max_marks:
                return True
            if await self._count(store, tenant) <= self.max_marks:
                return True
            # Past the bound: taken back (a replica writing at the same moment may take its
            # own back too; both are refused rather than both kept).
            await store.delete(where, [point.id])
            return False

        if not await self._store(write):
            raise TooManyMarks
        return Mark(point.id, result, relevant, space.model, at)

    async def _count(self, store: GalleryStore, tenant: str) -> int:
        return sum([await store.count(s, self._filter(tenant)) for s in await self._served()])

    async def count(self, tenant: str) -> int:
        return await self._store(lambda store: self._count(store, tenant))

    async def page(self, tenant: str, limit: int, after: str | None) -> tuple[list[Mark], str | None]:
        """One page of the tenant's marks in a stable order, and the cursor of the next (None: the end)."""
        spaces = await self._served()
        index, start = 0, None
        if after is not None:
            found = CURSOR.fullmatch(after)
            names = [s.name for s in spaces]
            if found is None or found.group(1) not in names:
                raise BadCursor
            index, start = names.index(found.group(1)), found.group(2)

        async def read(store: GalleryStore) -> tuple[list[Mark], str | None]:
            marks: list[Mark] = []
            i, begin = index, start
            while i < len(spaces):
                got = await store.scroll(spaces[i], limit=limit - len(marks), filter=self._filter(tenant), start=begin)
                marks.extend(m for m in (_mark(p) for p in got.points if _mine(p, tenant)) if m is not None)
                if got.next is not None:
                    return marks, f"{spaces[i].name}_{got.next}"
                i, begin = i + 1, None
                if len(marks) >= limit:
                    # Full at a space's end: a next page only if a later space holds any.
                    for j in range(i, len(spaces)):
                        if await store.count(spaces[j], self._filter(tenant)):
                            return marks, f"{spaces[j].name}_"
                    return marks, None
            return marks, None

        return await self._store(read)

    async def delete(self, tenant: str, id: str) -> bool:
        """Delete the tenant's mark ``id``; False when the tenant has none by that id."""

        async def remove(store: GalleryStore) -> bool:
            for space in await self._served():
                found = await store.retrieve(space, [id])
                if found and _mine(found[0], tenant):
                    await store.delete(space, [id])
                    return True
            return False

        return await self._store(remove)

    async def near(self, space: VectorSpace, vector: np.ndarray, *, tenant: str, limit: int,
                   min_similarity: float) -> list[NearMark]:
        """The tenant's marks whose query has cosine >= ``min_similarity`` to ``vector``, most
        similar first, at most ``limit``: one store query with the tenant filter."""
        hits = await self._store(lambda store: store.search(
            marks_space(space), [float(x) for x in vector], limit=limit, filter=self._filter(tenant),
            min_score=min_similarity))
        near = []
        for hit in hits:
            mark = _mark(hit.point) if _mine(hit.point, tenant) else None
            if mark is not None:
                near.append(NearMark(mark.result, mark.relevant, float(hit.score)))
        return near

    async def forget_tenant(self, tenant: str) -> None:
        """Every mark of ``tenant`` in the spaces of the models served now, one filtered delete each."""

        async def forget(store: GalleryStore) -> None:
            for space in await self._served():
                await store.delete_where(space, self._filter(tenant))

        await self._store(forget)


def mark_id(tenant: str, query_digest: str, result: str) -> str:
    """The id ``put`` gives this mark (tests and clients may predict it)."""
    return point_id(MARKS, hashlib.sha256(f"{query_digest}\0{result}".encode()).hexdigest(), tenant)

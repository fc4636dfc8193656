"""The production gallery store: a Qdrant server or cluster through qdrant-client.

One Qdrant collection per vector space, named ``<prefix><space.name>``, with the same
named vector, payload layout and payload indexes as the embedded store. Location
``":memory:"`` is qdrant-client's in-process local mode (tests only: exact search,
no payload indexes, "not for production").

The server builds its indexes itself; writes wait for the server's acknowledgement
(``wait=True``), so a returned upsert is in the server's WAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from search_gateway.gallery.base import (
    IMAGE_VECTOR,
    ExampleQuery,
    GalleryCorrupt,
    GalleryError,
    GalleryFilter,
    GalleryHit,
    GalleryPage,
    GalleryPoint,
    GalleryUnavailable,
    VectorSpace,
)
from search_gateway.gallery.schema import (
    LINK_CHECKED,
    PAYLOAD_INDEXES,
    PayloadIndex,
    checked_vector,
    engine_ids,
    epoch_s,
    facet_key,
    page_limit,
    query_vector,
    require_narrow,
    to_hit,
    to_payload,
    to_point,
)

MEMORY = ":memory:"

# What a network or transport failure looks like from qdrant-client: its REST layer
# wraps httpx's errors in ResponseHandlingException.
_TRANSIENT: tuple[type[BaseException], ...] = (ResponseHandlingException, OSError, TimeoutError)


def _qdrant_filter(spec: GalleryFilter | None) -> qm.Filter | None:
    if spec is None or spec.is_empty:
        return None
    must: list[Any] = []
    if spec.collections:
        must.append(qm.FieldCondition(key="collection", match=qm.MatchAny(any=list(spec.collections))))
    if spec.tenant is not None:
        must.append(qm.FieldCondition(key="tenant", match=qm.MatchValue(value=spec.tenant)))
    for tag in spec.tags:
        must.append(qm.FieldCondition(key="tags", match=qm.MatchValue(value=tag)))
    if spec.content_hashes:
        must.append(qm.FieldCondition(key="content_hash", match=qm.MatchAny(any=list(spec.content_hashes))))
    if spec.urls:
        must.append(qm.FieldCondition(key="urls", match=qm.MatchAny(any=list(spec.urls))))
    if spec.color_scheme is not None:
        must.append(qm.FieldCondition(key="color_scheme", match=qm.MatchValue(value=spec.color_scheme)))
    if spec.placement:
        must.append(qm.FieldCondition(key="placement", match=qm.MatchAny(any=list(spec.placement))))
    if spec.colour_missing:
        must.extend([qm.IsEmptyCondition(is_empty=qm.PayloadField(key="color_scheme")),
                     qm.IsEmptyCondition(is_empty=qm.PayloadField(key="color_error"))])
    if spec.thumbnails:
        must.append(qm.FieldCondition(key="thumbnail", match=qm.MatchAny(any=list(spec.thumbnails))))
    if spec.checked_before is not None:
        must.append(qm.FieldCondition(key=LINK_CHECKED, range=qm.Range(lt=epoch_s(spec.checked_before))))
    if spec.link_unchecked:
        must.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key=LINK_CHECKED)))
    if spec.link_state is not None:
        must.append(qm.FieldCondition(key="link_state", match=qm.MatchValue(value=spec.link_state)))
    return qm.Filter(must=must)


def _example_query(query: ExampleQuery) -> qm.RecommendQuery | qm.RelevanceFeedbackQuery:
    """The server (and qdrant-client's local mode) has every query by example: the
    Recommendation API's strategies and, since 1.17, relevance feedback."""
    positives: list[Any] = [query_vector(v) for v in query.positives]
    negatives: list[Any] = [query_vector(v) for v in query.negatives]
    target = query_vector(query.target) if query.target is not None else None
    if query.method == "feedback_naive":
        a, b, c = query.weights
        items = ([qm.FeedbackItem(example=v, score=1.0) for v in positives]
                 + [qm.FeedbackItem(example=v, score=0.0) for v in negatives])
        if target is None:  # the marks alone: the positives' mean is the target
            target = [sum(column) / len(positives) for column in zip(*positives, strict=True)]
        return qm.RelevanceFeedbackQuery(relevance_feedback=qm.RelevanceFeedbackInput(
            target=target, feedback=items,
            strategy=qm.NaiveFeedbackStrategy(naive=qm.NaiveFeedbackStrategyParams(a=a, b=b, c=c))))
    strategy = (qm.RecommendStrategy.BEST_SCORE if query.method == "best_score"
                else qm.RecommendStrategy.AVERAGE_VECTOR)
    return qm.RecommendQuery(recommend=qm.RecommendInput(
        positive=([target] if target is not None else []) + positives, negative=negatives, strategy=strategy))


def _revision_is(revision: str) -> qm.Filter:
    # A record written before revisions existed has none: it matches "".
    if not revision:
        return qm.Filter(must=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="revision"))])
    return qm.Filter(must=[qm.FieldCondition(key="revision", match=qm.MatchValue(value=revision))])


def _index_schema(index: PayloadIndex) -> Any:
    if index.integer:
        return qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=True, range=index.range,
                                     enable_hnsw=index.enable_hnsw)
    return qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=index.is_tenant,
                                 enable_hnsw=index.enable_hnsw)


class QdrantGalleryStore:
    """:class:`GalleryStore` over ``AsyncQdrantClient``. Open with :meth:`open`."""

    def __init__(self, client: AsyncQdrantClient, location: str, prefix: str, hnsw_ef: int | None) -> None:
        self._client = client
        self._location = location
        self._local = location == MEMORY
        self._prefix = prefix
        # Search-time HNSW beam width; public so a benchmark can sweep it.
        self.hnsw_ef = hnsw_ef
        # Brute force instead of the HNSW index (GATEWAY_GALLERY_EXACT).
        self.exact = False
        self._known: set[str] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        prefix: str = "gallery-",
        hnsw_ef: int | None = 128,
        timeout_s: int = 10,
    ) -> QdrantGalleryStore:
        """Connect and check the server answers, so a wrong URL fails at start with its name."""
        if url == MEMORY:
            client = AsyncQdrantClient(location=MEMORY)
        else:
            # No version probe at construction: it would warn instead of failing; the
            # listing below fails clearly instead.
            client = AsyncQdrantClient(url=url, api_key=api_key, timeout=timeout_s, check_compatibility=False)
        store = cls(client, url, prefix, hnsw_ef)
        try:
            await store._guard(client.get_collections())
        except BaseException:
            await client.close()
            raise
        return store

    def _collection(self, space: VectorSpace) -> str:
        return f"{self._prefix}{space.name}"

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except GalleryError:
            raise
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            if status in (429, 502, 503, 504) or status >= 500:
                raise GalleryUnavailable(f"The Qdrant server at {self._location} answered {status}.") from exc
            raise GalleryError(
                f"The Qdrant server at {self._location} refused a gallery request ({status}): "
                f"{exc.content[:300].decode(errors='replace')}"
            ) from exc
        except _TRANSIENT as exc:
            raise GalleryUnavailable(f"The Qdrant server at {self._location} cannot be reached: {exc}") from exc

    async def _exists(self, space: VectorSpace) -> bool:
        name = self._collection(space)
        if name in self._known:
            return True
        if await self._guard(self._client.collection_exists(name)):
            await self._check(space)
            await self._index(name, missing_only=True)
            self._known.add(name)
            return True
        return False

    async def _index(self, name: str, *, missing_only: bool) -> None:
        """Create the payload indexes; with ``missing_only``, those a collection made by an
        older version lacks (the size classes of the byte quota, for one)."""
        if self._local:  # local mode has no payload indexes (and warns)
            return
        present: set[str] = set()
        if missing_only:
            info = await self._guard(self._client.get_collection(name))
            present = set(info.payload_schema or {})
        for index in PAYLOAD_INDEXES:
            if index.field not in present:
                await self._guard(self._client.create_payload_index(name, index.field,
                                                                    field_schema=_index_schema(index)))

    async def _check(self, space: VectorSpace) -> None:
        name = self._collection(space)
        info = await self._guard(self._client.get_collection(name))
        vectors = info.config.params.vectors
        params = vectors.get(IMAGE_VECTOR) if isinstance(vectors, dict) else None
        if params is None or params.size != space.dimension or params.distance != qm.Distance.COSINE:
            raise GalleryCorrupt(
                f"The Qdrant collection {name} at {self._location} does not hold {space.dimension}-d cosine "
                f"'{IMAGE_VECTOR}' vectors; it was not created by this gallery. Nothing was changed: "
                "rename or delete that collection, or choose another prefix."
            )

    async def _ensure(self, space: VectorSpace) -> str:
        name = self._collection(space)
        if await self._exists(space):
            return name
        try:
            await self._guard(
                self._client.create_collection(
                    name,
                    vectors_config={IMAGE_VECTOR: qm.VectorParams(size=space.dimension, distance=qm.Distance.COSINE)},
                )
            )
        except GalleryError:
            # Another gateway replica may have created it first.
            if not await self._guard(self._client.collection_exists(name)):
                raise
        await self._index(name, missing_only=False)
        await self._check(space)
        self._known.add(name)
        return name

    @staticmethod
    def _points(space: VectorSpace, points: Sequence[GalleryPoint]) -> list[qm.PointStruct]:
        return [qm.PointStruct(id=p.id, vector={IMAGE_VECTOR: checked_vector(space, p)}, payload=to_payload(p))
                for p in points]

    async def upsert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        if not points:
            return
        batch = self._points(space, points)
        name = await self._ensure(space)
        await self._guard(self._client.upsert(name, points=batch, wait=True))

    async def insert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        # update_mode needs a Qdrant server 1.18 or newer (docs/gateway.md, "Quotas, and writes of several replicas at once").
        if not points:
            return
        batch = self._points(space, points)
        name = await self._ensure(space)
        await self._guard(self._client.upsert(name, points=batch, wait=True, update_mode=qm.UpdateMode.INSERT_ONLY))

    async def replace_if(self, space: VectorSpace, point: GalleryPoint, revision: str) -> None:
        batch = self._points(space, [point])
        if not await self._exists(space):
            return  # nothing stored: nothing to replace
        await self._guard(self._client.upsert(self._collection(space), points=batch, wait=True,
                                              update_filter=_revision_is(revision),
                                              update_mode=qm.UpdateMode.UPDATE_ONLY))

    async def facet(self, space: VectorSpace, key: str, filter: GalleryFilter | None = None) -> dict[str | int, int]:
        field = facet_key(key)
        if not await self._exists(space):
            return {}
        answer = await self._guard(self._client.facet(self._collection(space), field, facet_filter=_qdrant_filter(filter),
                                                      limit=100_000, exact=True))
        return {hit.value: int(hit.count) for hit in answer.hits}

    async def delete(self, space: VectorSpace, ids: Sequence[str]) -> None:
        if not ids or not await self._exists(space):
            return
        wanted = engine_ids(ids)
        await self._guard(
            self._client.delete(self._collection(space), points_selector=qm.PointIdsList(points=wanted), wait=True)
        )

    async def delete_where(self, space: VectorSpace, filter: GalleryFilter) -> None:
        wanted = _qdrant_filter(require_narrow(filter))
        if wanted is None or not await self._exists(space):
            return
        await self._guard(
            self._client.delete(self._collection(space), points_selector=qm.FilterSelector(filter=wanted), wait=True)
        )

    async def search(
        self,
        space: VectorSpace,
        vector: Sequence[float],
        *,
        limit: int,
        filter: GalleryFilter | None = None,
        min_score: float | None = None,
    ) -> list[GalleryHit]:
        if not await self._exists(space):
            return []
        params = (qm.SearchParams(hnsw_ef=self.hnsw_ef, exact=self.exact)
                  if (self.hnsw_ef or self.exact) and not self._local else None)
        answer = await self._guard(
            self._client.query_points(
                self._collection(space),
                query=query_vector(vector),
                using=IMAGE_VECTOR,
                query_filter=_qdrant_filter(filter),
                score_threshold=min_score,
                limit=limit,
                with_payload=True,
                with_vectors=False,
                search_params=params,
            )
        )
        return [to_hit(hit.payload, hit.score) for hit in answer.points]

    async def search_by_examples(self, space: VectorSpace, query: ExampleQuery, *, limit: int,
                                 filter: GalleryFilter | None = None) -> list[GalleryHit]:
        if not await self._exists(space):
            return []
        params = (qm.SearchParams(hnsw_ef=self.hnsw_ef, exact=self.exact)
                  if (self.hnsw_ef or self.exact) and not self._local else None)
        answer = await self._guard(
            self._client.query_points(self._collection(space), query=_example_query(query), using=IMAGE_VECTOR,
                                      query_filter=_qdrant_filter(filter), limit=limit, with_payload=True,
                                      with_vectors=False, search_params=params)
        )
        return [to_hit(hit.payload, hit.score) for hit in answer.points]

    async def count(self, space: VectorSpace, filter: GalleryFilter | None = None) -> int:
        if not await self._exists(space):
            return 0
        answer = await self._guard(
            self._client.count(self._collection(space), count_filter=_qdrant_filter(filter), exact=True)
        )
        return int(answer.count)

    async def retrieve(self, space: VectorSpace, ids: Sequence[str]) -> list[GalleryPoint]:
        if not ids or not await self._exists(space):
            return []
        wanted = engine_ids(ids)
        records = await self._guard(
            self._client.retrieve(self._collection(space), ids=wanted, with_payload=True, with_vectors=True)
        )
        return [to_point(r.payload, r.vector) for r in records]

    async def scroll(
        self, space: VectorSpace, *, limit: int, filter: GalleryFilter | None = None, start: str | None = None,
        oldest_checked: bool = False,
    ) -> GalleryPage:
        if not await self._exists(space):
            return GalleryPage([], None)
        order = qm.OrderBy(key=LINK_CHECKED, direction=qm.Direction.ASC) if oldest_checked else None
        records, after = await self._guard(
            self._client.scroll(
                self._collection(space),
                scroll_filter=_qdrant_filter(filter),
                limit=page_limit(limit),
                offset=engine_ids([start])[0] if start and order is None else None,
                with_payload=True,
                with_vectors=False,
                order_by=order,
            )
        )
        if order is not None:
            after = None  # one page, ordered by value: no id cursor
        return GalleryPage([to_point(r.payload, None) for r in records], str(after) if after is not None else None)

    async def optimize(self, space: VectorSpace) -> bool:
        return False  # the server's own optimizers build indexes in the background

    async def close(self) -> None:
        await self._client.close()

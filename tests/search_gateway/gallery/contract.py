"""The contract every GalleryStore keeps, as one abstract test class.

Subclassed once per backend (``test_edge_store.py``, ``test_qdrant_store.py``), each
subclass providing ``make_store``; every test gets an empty store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from search_gateway.gallery import Gallery, GalleryFilter, GalleryPoint, GalleryStore, VectorSpace, point_id
from search_gateway.gallery.base import EXAMPLE_QUERIES, ExampleQuery, QueryUnsupported

DIM = 16
SPACE = VectorSpace("clip", "random-clip-seed0", DIM)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def at_cosine(base: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine to the unit vector ``base`` is exactly ``cosine``."""
    other = unit(seed, base.shape[0])
    orth = other - (other @ base) * base
    orth /= np.linalg.norm(orth)
    return (cosine * base + np.sqrt(1.0 - cosine**2) * orth).astype(np.float32)


def sample_point(n: int, **fields: object) -> GalleryPoint:
    values: dict[str, object] = dict(
        content_hash=f"sha256-{n:04d}",
        vector=tuple(unit(n).tolist()),
        urls=(f"https://img.example/{n}.jpg",),
        source_pages=(f"https://pins.example/{n}",),
        platform="pinterest",
        title=f"tattoo {n}",
        engine="ddgs",
        first_seen=T0,
        last_seen=T0,
        width=640,
        height=480,
        tags={"geometric": 0.31, "mandala": 0.22},
    )
    values.update(fields)
    return GalleryPoint(**values)  # type: ignore[arg-type]


class GalleryStoreContract:
    """Not collected itself (no ``Test`` prefix); backends subclass it."""

    async def make_store(self, tmp_path: Path) -> GalleryStore:
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[GalleryStore]:
        opened = await self.make_store(tmp_path)
        try:
            yield opened
        finally:
            await opened.close()

    @pytest_asyncio.fixture
    async def gallery(self, store: GalleryStore) -> Gallery:
        return Gallery(store, clock=lambda: T0)

    async def test_upsert_then_retrieve_round_trips_every_field(self, store: GalleryStore) -> None:
        point = sample_point(1, tenant=None, collection="web")
        await store.upsert(SPACE, [point])
        [back] = await store.retrieve(SPACE, [point.id])
        assert back.id == point.id == point_id("web", "sha256-0001")
        assert back.vector is not None and np.allclose(back.vector, point.vector, atol=1e-5)
        assert back == GalleryPoint(**{**point.__dict__, "vector": back.vector})
        assert await store.retrieve(SPACE, [point_id("web", "never-stored")]) == []

    async def test_repeated_upsert_is_idempotent(self, store: GalleryStore) -> None:
        point = sample_point(2)
        for _ in range(3):
            await store.upsert(SPACE, [point])
        assert await store.count(SPACE) == 1
        [back] = await store.retrieve(SPACE, [point.id])
        assert back.urls == point.urls

    async def test_remember_merges_urls_and_sightings_of_one_picture(self, store: GalleryStore) -> None:
        clock = iter([T0, T0 + timedelta(hours=1)])
        gallery = Gallery(store, clock=lambda: next(clock))
        first = sample_point(3, urls=("https://a.example/x.jpg",), source_pages=("https://a.example/p",),
                             first_seen=None, last_seen=None)
        again = sample_point(3, urls=("https://b.example/y.jpg",), source_pages=("https://b.example/q",),
                             title="", platform="reddit", first_seen=None, last_seen=None)
        await gallery.remember(SPACE, [first])
        await gallery.remember(SPACE, [again])
        assert await store.count(SPACE) == 1
        stored = await gallery.get(SPACE, "sha256-0003")
        assert stored is not None
        assert stored.urls == ("https://a.example/x.jpg", "https://b.example/y.jpg")
        assert stored.source_pages == ("https://a.example/p", "https://b.example/q")
        assert (stored.first_seen, stored.last_seen) == (T0, T0 + timedelta(hours=1))
        assert (stored.title, stored.platform) == ("tattoo 3", "pinterest")  # the first sighting names it

    async def test_same_picture_in_two_collections_is_two_points(self, gallery: Gallery) -> None:
        await gallery.remember(SPACE, [sample_point(4), sample_point(4, collection="private-a", tenant="a")])
        assert await gallery.count(SPACE) == 2
        assert await gallery.count(SPACE, collections=["web"]) == 1

    async def test_filters_by_collection_tenant_and_tags(self, gallery: Gallery) -> None:
        await gallery.remember(SPACE, [
            sample_point(10, tags={"geometric": 0.4}),
            sample_point(11, tags={"geometric": 0.3, "mandala": 0.2}),
            sample_point(12, collection="private-a", tenant="a", tags={"mandala": 0.5}),
            sample_point(13, collection="private-b", tenant="b", tags={"geometric": 0.5, "mandala": 0.1}),
        ])
        query = unit(11)

        async def found(**kwargs: object) -> set[str]:
            hits = await gallery.find(SPACE, query, limit=10, **kwargs)  # type: ignore[arg-type]
            return {h.point.content_hash for h in hits}

        assert await found() == {"sha256-0010", "sha256-0011"}  # "web" by default
        assert await found(collections=["web", "private-a", "private-b"]) == {f"sha256-00{n}" for n in (10, 11, 12, 13)}
        assert await found(collections=["private-a", "private-b"], tenant="a") == {"sha256-0012"}
        assert await found(collections=["web", "private-b"], tags=["geometric", "mandala"]) == {"sha256-0011", "sha256-0013"}
        assert await found(tags=["no-such-tag"]) == set()
        assert await gallery.count(SPACE, tenant="b") == 1
        assert await gallery.count(SPACE, tags=["mandala"]) == 3
        assert await gallery.store.count(SPACE, GalleryFilter(content_hashes=("sha256-0010", "sha256-0012"))) == 2

    async def test_filters_by_colour_scheme_and_any_placement(self, gallery: Gallery) -> None:
        # Issue 22: color_scheme matches exactly; placement matches ANY name given; a point
        # written before colour facts existed (none stored) matches neither scheme.
        await gallery.remember(SPACE, [
            sample_point(20, color_scheme="colour", palette=("#c81e28", "#fafaf8"), palette_shares=(0.3, 0.7),
                         placement={"forearm": 0.3}),
            sample_point(21, color_scheme="black_and_grey", palette=("#101010",), palette_shares=(1.0,),
                         placement={"sleeve": 0.2, "upper_arm": 0.19}),
            sample_point(22, placement={"back": 0.3}),
            sample_point(23, color_error="dead_url: status_404"),
        ])
        query = unit(20)

        async def found(**kwargs: object) -> set[str]:
            hits = await gallery.find(SPACE, query, limit=10, **kwargs)  # type: ignore[arg-type]
            return {h.point.content_hash for h in hits}

        assert await found(color_scheme="colour") == {"sha256-0020"}
        assert await found(color_scheme="black_and_grey") == {"sha256-0021"}
        assert await found(placement=["forearm", "sleeve"]) == {"sha256-0020", "sha256-0021"}
        assert await found(placement=["forearm"], color_scheme="black_and_grey") == set()
        assert await found(placement=["ankle"]) == set()
        missing = GalleryFilter(collections=("web",), colour_missing=True)
        assert {p.content_hash for p in (await gallery.store.scroll(SPACE, limit=10, filter=missing)).points} == {
            "sha256-0022"}  # no colour and no recorded failure: what a backfill still has to do
        [back] = await gallery.store.retrieve(SPACE, [sample_point(20).id])
        assert (back.palette, back.palette_shares, dict(back.placement)) == (
            ("#c81e28", "#fafaf8"), (0.3, 0.7), {"forearm": 0.3})
        [old] = await gallery.store.retrieve(SPACE, [sample_point(22).id])
        assert (old.color_scheme, old.palette, old.palette_shares) == (None, None, None)

    async def test_search_ranks_by_cosine_and_min_score_drops_weak_hits(self, gallery: Gallery) -> None:
        base = unit(100)
        cosines = [0.99, 0.8, 0.4, -0.2]
        points = [sample_point(20 + i, vector=tuple(at_cosine(base, c, 200 + i).tolist()))
                  for i, c in enumerate(cosines)]
        await gallery.remember(SPACE, points)
        hits = await gallery.find(SPACE, base, limit=10)
        assert [h.point.content_hash for h in hits] == [p.content_hash for p in points]
        assert np.allclose([h.score for h in hits], cosines, atol=1e-4)
        assert all(h.point.vector is None and h.point.urls for h in hits)
        cut = 0.6
        strong = await gallery.find(SPACE, base, limit=10, min_score=cut)
        assert [h.point.content_hash for h in strong] == [points[0].content_hash, points[1].content_hash]
        assert len(await gallery.find(SPACE, base, limit=1)) == 1

    async def test_forget_deletes_and_count_follows(self, gallery: Gallery) -> None:
        await gallery.remember(SPACE, [sample_point(n) for n in range(30, 35)])
        assert await gallery.count(SPACE) == 5
        await gallery.forget(SPACE, ["sha256-0031", "sha256-0033", "never-stored"])
        assert await gallery.count(SPACE) == 3
        assert await gallery.get(SPACE, "sha256-0031") is None
        assert await gallery.get(SPACE, "sha256-0032") is not None
        hits = await gallery.find(SPACE, unit(31), limit=10)
        assert "sha256-0031" not in {h.point.content_hash for h in hits}

    async def test_vector_spaces_are_isolated(self, gallery: Gallery) -> None:
        pretrained = VectorSpace("clip", "sha256:ab12pretrained", DIM)
        other_model = VectorSpace("dinov2", "random-clip-seed0", 8)
        await gallery.remember(SPACE, [sample_point(40), sample_point(41)])
        await gallery.remember(pretrained, [sample_point(42)])
        assert await gallery.count(SPACE) == 2 and await gallery.count(pretrained) == 1
        assert await gallery.count(other_model) == 0
        assert {h.point.content_hash for h in await gallery.find(pretrained, unit(40), limit=10)} == {"sha256-0042"}
        assert await gallery.find(other_model, unit(1, 8), limit=10) == []
        await gallery.forget(pretrained, ["sha256-0042"])
        assert await gallery.count(SPACE) == 2  # the old space is untouched

    async def test_scroll_pages_through_every_matching_point_once(self, store: GalleryStore) -> None:
        # More points than one page, in two tenants: pages of 7 reach each of one tenant's
        # points exactly once, never the other's, and the last page says there is no next.
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="a") for n in range(60, 83)])
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="b") for n in range(83, 90)])
        seen: list[str] = []
        start: str | None = None
        pages = 0
        while True:
            page = await store.scroll(SPACE, limit=7, filter=GalleryFilter(tenant="a"), start=start)
            assert len(page.points) <= 7 and all(p.vector is None for p in page.points)
            seen += [p.content_hash for p in page.points]
            pages += 1
            if page.next is None:
                break
            start = page.next
        assert sorted(seen) == [f"sha256-{n:04d}" for n in range(60, 83)]
        assert pages == 4
        assert {p.tenant for p in (await store.scroll(SPACE, limit=100)).points} == {"a", "b"}
        assert (await store.scroll(VectorSpace("never", "written", DIM), limit=5)).points == []
        with pytest.raises(ValueError, match="page"):
            await store.scroll(SPACE, limit=0)

    async def test_delete_where_removes_exactly_the_matching_points(self, store: GalleryStore) -> None:
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="a") for n in range(90, 95)])
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="b") for n in range(95, 97)])
        await store.upsert(SPACE, [sample_point(n, collection="other", tenant="a") for n in range(97, 99)])
        await store.upsert(SPACE, [sample_point(99)])  # public web
        await store.delete_where(SPACE, GalleryFilter(collections=("flash",), tenant="a"))
        left = (await store.scroll(SPACE, limit=100)).points
        assert sorted((p.collection, p.tenant) for p in left) == [
            ("flash", "b"), ("flash", "b"), ("other", "a"), ("other", "a"), ("web", None)]
        await store.delete_where(VectorSpace("never", "written", DIM), GalleryFilter(tenant="a"))  # a no-op
        with pytest.raises(ValueError, match="empty"):
            await store.delete_where(SPACE, GalleryFilter())
        assert await store.count(SPACE) == 5

    async def test_bad_vectors_are_refused_with_a_sentence(self, gallery: Gallery) -> None:
        with pytest.raises(ValueError, match="16-d"):
            await gallery.remember(SPACE, [sample_point(50, vector=(1.0, 2.0))])
        with pytest.raises(ValueError, match="zeros"):
            await gallery.find(SPACE, np.zeros(DIM), limit=5)
        with pytest.raises(ValueError, match="finite"):
            await gallery.find(SPACE, np.full(DIM, np.nan), limit=5)
        with pytest.raises(ValueError, match="limit"):
            await gallery.find(SPACE, unit(1), limit=0)
        assert await gallery.count(SPACE) == 0

    async def test_insert_writes_only_points_not_stored_yet(self, store: GalleryStore) -> None:
        first = sample_point(110, collection="@c", tenant="a", revision="r1", title="first")
        await store.insert(SPACE, [first])
        await store.insert(SPACE, [sample_point(110, collection="@c", tenant="a", revision="r2", title="second"),
                                   sample_point(111, collection="@c", tenant="a", revision="r3")])
        found = {p.content_hash: p for p in await store.retrieve(SPACE, [first.id, point_id("@c", "sha256-0111", "a")])}
        assert (found["sha256-0110"].revision, found["sha256-0110"].title) == ("r1", "first")  # left as it was
        assert found["sha256-0111"].revision == "r3"

    async def test_replace_if_writes_only_over_the_revision_it_was_given(self, store: GalleryStore) -> None:
        point = sample_point(112, collection="@c", tenant="a", revision="r1")
        await store.replace_if(SPACE, point, "r1")  # a space never written: nothing to replace
        assert await store.count(SPACE) == 0
        await store.upsert(SPACE, [point])
        await store.replace_if(SPACE, sample_point(112, collection="@c", tenant="a", revision="r2", title="b"), "r1")
        await store.replace_if(SPACE, sample_point(112, collection="@c", tenant="a", revision="r3", title="c"), "r1")
        [back] = await store.retrieve(SPACE, [point.id])
        assert (back.revision, back.title) == ("r2", "b")  # the second writer read r1, stale by then
        await store.delete(SPACE, [point.id])
        await store.replace_if(SPACE, point, "r2")  # never brings a deleted point back
        assert await store.retrieve(SPACE, [point.id]) == []
        legacy = sample_point(113, collection="@c", tenant="a")  # no revision: written before they existed
        await store.upsert(SPACE, [legacy])
        await store.replace_if(SPACE, sample_point(113, collection="@c", tenant="a", revision="r9"), "")
        assert [p.revision for p in await store.retrieve(SPACE, [legacy.id])] == ["r9"]

    async def test_a_record_keeps_its_own_fields_and_the_conditional_writes(self, store: GalleryStore) -> None:
        """A bookkeeping record (GalleryPoint.record) reads back with its fields and no image
        fields, is found by the indexed fields, and a write over an image-layout point of
        the same id (payload version 1) is still a compare-and-set on its revision."""
        fields = {"kind": "collection", "name": "flash", "models": ["clip"], "deleting": False, "n": 3}
        record = GalleryPoint("flash", tuple(unit(120).tolist()), "@c", "a", bytes=5000, revision="r1",
                              record=fields)
        await store.upsert(SPACE, [record])
        [back] = await store.retrieve(SPACE, [record.id])
        assert back.record == fields and (back.content_hash, back.collection, back.tenant) == ("flash", "@c", "a")
        assert (back.bytes, back.revision, back.title, back.engine, back.first_seen) == (5000, "r1", "", "", None)
        assert [p.id for p in (await store.scroll(SPACE, limit=10, filter=GalleryFilter(
            collections=("@c",), tenant="a", content_hashes=("flash",)))).points] == [record.id]
        assert await store.facet(SPACE, "size_class", GalleryFilter(tenant="a")) == {90: 1}
        await store.replace_if(SPACE, GalleryPoint("flash", record.vector, "@c", "a", revision="r3",
                                                   record={**fields, "n": 4}), "r0")
        await store.insert(SPACE, [GalleryPoint("flash", record.vector, "@c", "a", revision="r4", record=fields)])
        assert [p.revision for p in await store.retrieve(SPACE, [record.id])] == ["r1"]
        old = sample_point(121, collection="@c", tenant="a", revision="v1", engine="clip")  # an image layout
        await store.upsert(SPACE, [old])
        await store.replace_if(SPACE, GalleryPoint(old.content_hash, old.vector, "@c", "a", revision="v2",
                                                   record=fields), "v1")
        await store.replace_if(SPACE, GalleryPoint(old.content_hash, old.vector, "@c", "a", revision="v3",
                                                   record=fields), "v1")
        [moved] = await store.retrieve(SPACE, [old.id])
        assert (moved.revision, moved.record, moved.engine, moved.urls) == ("v2", fields, "", ())

    async def test_facet_counts_points_by_value_under_a_filter(self, store: GalleryStore) -> None:
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="a", bytes=1000) for n in range(120, 123)])
        await store.upsert(SPACE, [sample_point(n, collection="other", tenant="a", bytes=5000) for n in range(123, 125)])
        await store.upsert(SPACE, [sample_point(n, collection="flash", tenant="b", bytes=7) for n in range(125, 127)])
        assert await store.facet(SPACE, "collection", GalleryFilter(tenant="a")) == {"flash": 3, "other": 2}
        classes = await store.facet(SPACE, "size_class", GalleryFilter(tenant="a"))
        assert sorted(classes.values()) == [2, 3] and len(classes) == 2
        assert await store.facet(VectorSpace("never", "written", DIM), "collection") == {}
        with pytest.raises(ValueError, match="facets"):
            await store.facet(SPACE, "title")

    # Queries by example (search/refine.py): what the engine runs, or QueryUnsupported.
    UNSUPPORTED: frozenset[str] = frozenset()  # the query types this engine lacks

    async def test_search_by_examples_scores_by_the_marks_or_says_it_cannot(self, store: GalleryStore) -> None:
        base = unit(500)
        near_positive, near_negative = at_cosine(base, 0.2, 501), at_cosine(base, 0.3, 502)
        positive, negative = at_cosine(near_positive, 0.99, 503), at_cosine(near_negative, 0.99, 504)
        points = [sample_point(n, vector=tuple(v.tolist()), tags={})
                  for n, v in ((1, positive), (2, negative), (3, near_positive), (4, near_negative), (5, base))]
        await store.upsert(SPACE, points)
        marks = dict(positives=(tuple(positive.tolist()),), negatives=(tuple(negative.tolist()),))
        for method in EXAMPLE_QUERIES:
            query = ExampleQuery(method, target=tuple(base.tolist()), **marks)  # type: ignore[arg-type]
            if method in self.UNSUPPORTED:
                with pytest.raises(QueryUnsupported):
                    await store.search_by_examples(SPACE, query, limit=5)
                continue
            hits = await store.search_by_examples(SPACE, query, limit=5, filter=GalleryFilter(collections=("web",)))
            order = [h.point.content_hash for h in hits]
            # Near the positive comes before near the negative, which is pushed below everything else.
            assert order.index("sha256-0003") < order.index("sha256-0004"), (method, order)
            assert order[-2:] in (["sha256-0004", "sha256-0002"], ["sha256-0002", "sha256-0004"]), (method, order)
            assert all(h.point.vector is None for h in hits)
            # The marks alone (no target) are a query too.
            alone = await store.search_by_examples(SPACE, ExampleQuery(method, **marks), limit=2)  # type: ignore[arg-type]
            assert alone[0].point.content_hash in ("sha256-0001", "sha256-0003"), (method, alone)
        # A space never written answers empty, without creating it.
        other = VectorSpace("clip", "never-written", DIM)
        if "best_score" not in self.UNSUPPORTED:
            query = ExampleQuery("best_score", **marks)  # type: ignore[arg-type]
            assert await store.search_by_examples(other, query, limit=3) == []

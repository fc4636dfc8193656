"""The embedded gallery store: qdrant-edge-py (Qdrant's Rust engine in-process).

Layout under the store's folder (``var/gallery`` by default)::

    gallery-store.json            format marker: refuse what we cannot read
    <space.name>/gallery-space.json   which model/weights/dimension the space holds
    <space.name>/{wal,segments,...}   one EdgeShard per vector space

Engine facts this module is built around (qdrant-edge-py 0.9, measured):

* Every engine call holds the GIL, so a call in a thread still stalls the event
  loop for its duration. Queries and upserts take milliseconds; ``optimize()``
  (the HNSW build) takes seconds to minutes and is therefore run in a CHILD
  PROCESS while the shard is closed here (:meth:`EdgeGalleryStore.optimize`).
* Only one process may open a shard (the WAL is locked): the gateway owns the
  store; a second opener gets :class:`GalleryUnavailable`.
* Calls go through one worker thread per shard, which also orders a close after
  the calls already queued.
* An acknowledged upsert is in the WAL, which survives ``kill -9`` and is replayed
  on the next load.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

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
    QueryUnsupported,
    VectorSpace,
)
from search_gateway.gallery.schema import (
    LINK_CHECKED,
    PAYLOAD_INDEXES,
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

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_MARKER = "gallery-store.json"
SPACE_MARKER = "gallery-space.json"
# Our own layout version, independent of the engine's segment format (which the
# engine checks itself on load).
FORMAT = 1

_WHAT_TO_DO = (
    "Nothing was changed. Restore the folder from a backup, or move it aside to start with an "
    "empty gallery (the images are remembered again as searches find them)."
)


def _is_engine_error(exc: BaseException) -> bool:
    # pyo3 panics arrive as PanicException, which derives from BaseException only.
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _open_error(exc: BaseException, path: Path) -> GalleryError:
    text = str(exc)
    if "WouldBlock" in text:
        return GalleryUnavailable(
            f"The gallery store at {path} is open in another process; only one process (the gateway) "
            "may open it. Stop the other process, or reach the gallery through the gateway."
        )
    return GalleryCorrupt(f"The gallery store at {path} cannot be read: {text}. {_WHAT_TO_DO}")


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise GalleryCorrupt(f"The gallery store marker {path} cannot be read ({exc}). {_WHAT_TO_DO}") from exc
    if content.get("format") != FORMAT:
        raise GalleryCorrupt(
            f"The gallery store at {path.parent} has format {content.get('format')!r}; this version reads "
            f"format {FORMAT} only. Run the version that wrote it, or move the folder aside to start an "
            "empty gallery. Nothing was changed."
        )
    return content


def _edge_filter(spec: GalleryFilter | None) -> qe.Filter | None:
    if spec is None or spec.is_empty:
        return None
    must: list[Any] = []
    if spec.collections:
        must.append(qe.FieldCondition("collection", match=qe.MatchAny(list(spec.collections))))
    if spec.tenant is not None:
        must.append(qe.FieldCondition("tenant", match=qe.MatchValue(spec.tenant)))
    for tag in spec.tags:
        must.append(qe.FieldCondition("tags", match=qe.MatchValue(tag)))
    if spec.content_hashes:
        must.append(qe.FieldCondition("content_hash", match=qe.MatchAny(list(spec.content_hashes))))
    if spec.urls:
        must.append(qe.FieldCondition("urls", match=qe.MatchAny(list(spec.urls))))
    if spec.color_scheme is not None:
        must.append(qe.FieldCondition("color_scheme", match=qe.MatchValue(spec.color_scheme)))
    if spec.placement:
        must.append(qe.FieldCondition("placement", match=qe.MatchAny(list(spec.placement))))
    if spec.colour_missing:
        must.extend([qe.IsEmptyCondition("color_scheme"), qe.IsEmptyCondition("color_error")])
    if spec.thumbnails:
        must.append(qe.FieldCondition("thumbnail", match=qe.MatchAny(list(spec.thumbnails))))
    if spec.checked_before is not None:
        must.append(qe.FieldCondition(LINK_CHECKED, range=qe.RangeFloat(lt=float(epoch_s(spec.checked_before) or 0))))
    if spec.link_unchecked:
        must.append(qe.IsEmptyCondition(LINK_CHECKED))
    if spec.link_state is not None:
        must.append(qe.FieldCondition("link_state", match=qe.MatchValue(spec.link_state)))
    return qe.Filter(must=must)


def _example_query(query: ExampleQuery) -> qe.Query:
    """qdrant-edge 0.9 has RecommendBestScore and FeedbackNaive; it has no average_vector
    strategy (the server computes that vector itself before a nearest search)."""
    positives: list[Any] = [query_vector(v) for v in query.positives]
    negatives: list[Any] = [query_vector(v) for v in query.negatives]
    if query.method == "best_score":
        first: list[Any] = [query_vector(query.target)] if query.target is not None else []
        return qe.Query.RecommendBestScore(qe.RecommendQuery(first + positives, negatives), using=IMAGE_VECTOR)
    if query.method == "feedback_naive":
        target = query_vector(query.target) if query.target is not None else _mean(query.positives)
        items = [qe.FeedbackItem(v, 1.0) for v in positives] + [qe.FeedbackItem(v, 0.0) for v in negatives]
        a, b, c = query.weights
        return qe.Query.FeedbackNaive(qe.FeedbackNaiveQuery(target, items, qe.NaiveFeedbackStrategy(a, b, c)),
                                      using=IMAGE_VECTOR)
    raise QueryUnsupported(f"qdrant-edge has no {query.method} query")


def _mean(vectors: Sequence[Sequence[float]]) -> list[float]:
    """The positives' mean: the feedback query's target when the marks alone are the query."""
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


def _revision_is(revision: str) -> qe.Filter:
    # A record written before revisions existed has none: it matches "".
    if not revision:
        return qe.Filter(must=[qe.IsEmptyCondition("revision")])
    return qe.Filter(must=[qe.FieldCondition("revision", match=qe.MatchValue(revision))])


def _engine_config(space: VectorSpace, hnsw: qe.HnswIndexConfig | None) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors={IMAGE_VECTOR: qe.EdgeVectorParams(size=space.dimension, distance=qe.Distance.Cosine)},
        hnsw_config=hnsw,
    )


class _Shard:
    """One space's EdgeShard and the single thread that is allowed to touch it."""

    def __init__(self, path: Path, space: VectorSpace, engine: qe.EdgeShard) -> None:
        self.path = path
        self.space = space
        # None while closed for a re-index in a child process; only read on the worker.
        self.engine: qe.EdgeShard | None = engine
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gallery-{space.name[:20]}")

    async def call(self, fn: Callable[[qe.EdgeShard], T]) -> T:
        def run() -> T:
            engine = self.engine
            if engine is None:
                raise GalleryUnavailable(f"The gallery space {self.space.name} is being re-indexed; retry shortly.")
            try:
                return fn(engine)
            except GalleryError:
                raise
            except BaseException as exc:
                if not _is_engine_error(exc):
                    raise
                raise GalleryUnavailable(f"The gallery store at {self.path} failed: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._worker, run)

    async def run_on_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def close_engine(self) -> None:
        """On the worker thread: after every call queued before it."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    async def shutdown(self) -> None:
        await self.run_on_worker(self.close_engine)
        self._worker.shutdown(wait=True)


def _load_engine(path: Path, space: VectorSpace) -> qe.EdgeShard:
    try:
        engine = qe.EdgeShard.load(str(path))
    except BaseException as exc:
        if not _is_engine_error(exc):
            raise
        raise _open_error(exc, path) from exc
    try:
        _check_vectors(engine, path, space)
        _ensure_indexes(engine)
    except BaseException:
        engine.close()
        raise
    return engine


def _check_vectors(engine: qe.EdgeShard, path: Path, space: VectorSpace) -> None:
    probe = [0.0] * space.dimension
    probe[0] = 1.0
    try:
        engine.query(qe.QueryRequest(limit=1, query=qe.Query.Nearest(probe, using=IMAGE_VECTOR)))
    except BaseException as exc:
        if not _is_engine_error(exc):
            raise
        raise GalleryCorrupt(
            f"The gallery space at {path} does not hold {space.dimension}-d '{IMAGE_VECTOR}' vectors "
            f"as its marker says ({exc}). {_WHAT_TO_DO}"
        ) from exc


def _ensure_indexes(engine: qe.EdgeShard) -> None:
    # Idempotent, and run on every open: a crash between creating a shard and
    # indexing it must not leave filters unindexed forever.
    present = set(engine.info().payload_schema)
    for index in PAYLOAD_INDEXES:
        if index.field not in present:
            params: Any = (qe.IntegerIndexParams(lookup=True, range=index.range, enable_hnsw=index.enable_hnsw)
                           if index.integer else
                           qe.KeywordIndexParams(is_tenant=index.is_tenant, enable_hnsw=index.enable_hnsw))
            engine.update(qe.UpdateOperation.create_field_index(index.field, params))


class EdgeGalleryStore:
    """:class:`GalleryStore` on local disk. Open with :meth:`open`; one per process."""

    def __init__(self, root: Path, shards: dict[str, _Shard], hnsw_ef: int | None, hnsw: qe.HnswIndexConfig | None):
        self.root = root
        self._shards = shards
        # Search-time HNSW beam width; public so a benchmark can sweep it.
        self.hnsw_ef = hnsw_ef
        # Brute force over every segment: recall 1.0, and at 100k x 512-d still ~10 ms here.
        self.exact = False
        self._hnsw = hnsw
        self._creating = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        root: str | os.PathLike[str],
        *,
        hnsw_ef: int | None = 128,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        exact: bool = False,
    ) -> EdgeGalleryStore:
        """Open (or create) the store and every space in it.

        Raises :class:`GalleryCorrupt` for anything unreadable, so that the service
        refuses to start instead of running on (or over) damaged data.
        """
        path = Path(root).absolute()
        hnsw = qe.HnswIndexConfig(m=hnsw_m, ef_construct=hnsw_ef_construct, full_scan_threshold=10_000)
        shards = await asyncio.to_thread(cls._open_all, path)
        store = cls(path, shards, hnsw_ef, hnsw)
        store.exact = exact
        return store

    @staticmethod
    def _open_all(root: Path) -> dict[str, _Shard]:
        marker = root / STORE_MARKER
        if root.exists() and not root.is_dir():
            raise GalleryCorrupt(f"The gallery store path {root} is a file, not a folder. {_WHAT_TO_DO}")
        if marker.exists():
            _read_marker(marker)
        elif root.exists() and any(root.iterdir()):
            raise GalleryCorrupt(
                f"{root} is not empty and is not a gallery store (no {STORE_MARKER}); choose an empty or "
                "new folder for the gallery. Nothing was changed."
            )
        else:
            root.mkdir(parents=True, exist_ok=True)
            _write_json_atomically(marker, {"format": FORMAT, "engine": "qdrant-edge-py"})
        shards: dict[str, _Shard] = {}
        try:
            for child in sorted(root.iterdir()):
                if not (child / SPACE_MARKER).exists():
                    continue
                space = _read_space(child)
                if not ((child / "wal").exists() or (child / "segments").exists()):
                    continue  # interrupted creation: nothing stored yet, recreated on first upsert
                shards[space.name] = _Shard(child, space, _load_engine(child, space))
        except BaseException:
            for shard in shards.values():
                if shard.engine is not None:
                    shard.engine.close()
            raise
        return shards

    def spaces(self) -> list[VectorSpace]:
        return [shard.space for shard in self._shards.values()]

    async def _shard_for_write(self, space: VectorSpace) -> _Shard:
        shard = self._shards.get(space.name)
        if shard is not None:
            return shard
        async with self._creating:
            shard = self._shards.get(space.name)
            if shard is None:
                folder = self.root / space.name
                engine = await asyncio.to_thread(self._create_engine, folder, space)
                shard = self._shards[space.name] = _Shard(folder, space, engine)
        return shard

    def _create_engine(self, folder: Path, space: VectorSpace) -> qe.EdgeShard:
        folder.mkdir(exist_ok=True)
        # The marker first: a folder with data but no marker would be unexplained.
        _write_json_atomically(
            folder / SPACE_MARKER,
            {
                "format": FORMAT,
                "model": space.model,
                "weights_fingerprint": space.weights_fingerprint,
                "dimension": space.dimension,
            },
        )
        try:
            engine = qe.EdgeShard.create(str(folder), _engine_config(space, self._hnsw))
        except BaseException as exc:
            if not _is_engine_error(exc):
                raise
            raise _open_error(exc, folder) from exc
        _ensure_indexes(engine)
        return engine

    async def upsert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        if not points:
            return
        batch = self._points(space, points)
        shard = await self._shard_for_write(space)
        await shard.call(lambda engine: engine.update(qe.UpdateOperation.upsert_points(batch)))

    def _points(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> list[qe.Point]:
        return [qe.Point(p.id, {IMAGE_VECTOR: checked_vector(space, p)}, to_payload(p)) for p in points]

    async def insert(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> None:
        if not points:
            return
        batch = self._points(space, points)
        shard = await self._shard_for_write(space)
        await shard.call(lambda engine: engine.update(
            qe.UpdateOperation.upsert_points(batch, update_mode=qe.UpdateMode.InsertOnly)))

    async def replace_if(self, space: VectorSpace, point: GalleryPoint, revision: str) -> None:
        batch = self._points(space, [point])
        shard = self._shards.get(space.name)
        if shard is None:
            return  # nothing stored: nothing to replace
        await shard.call(lambda engine: engine.update(qe.UpdateOperation.upsert_points(
            batch, condition=_revision_is(revision), update_mode=qe.UpdateMode.UpdateOnly)))

    async def facet(self, space: VectorSpace, key: str, filter: GalleryFilter | None = None) -> dict[str | int, int]:
        request = qe.FacetRequest(facet_key(key), limit=100_000, exact=True, filter=_edge_filter(filter))
        shard = self._shards.get(space.name)
        if shard is None:
            return {}
        found = await shard.call(lambda engine: engine.facet(request))
        return {hit.value: int(hit.count) for hit in found.hits}

    async def delete(self, space: VectorSpace, ids: Sequence[str]) -> None:
        shard = self._shards.get(space.name)
        if shard is None or not ids:
            return
        wanted = engine_ids(ids)
        await shard.call(lambda engine: engine.update(qe.UpdateOperation.delete_points(wanted)))

    async def delete_where(self, space: VectorSpace, filter: GalleryFilter) -> None:
        wanted = _edge_filter(require_narrow(filter))
        shard = self._shards.get(space.name)
        if shard is None or wanted is None:
            return
        await shard.call(lambda engine: engine.update(qe.UpdateOperation.delete_points_by_filter(wanted)))

    async def search(
        self,
        space: VectorSpace,
        vector: Sequence[float],
        *,
        limit: int,
        filter: GalleryFilter | None = None,
        min_score: float | None = None,
    ) -> list[GalleryHit]:
        shard = self._shards.get(space.name)
        if shard is None:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query_vector(vector), using=IMAGE_VECTOR),
            filter=_edge_filter(filter),
            score_threshold=min_score,
            with_payload=True,
            with_vector=False,
            params=qe.SearchParams(hnsw_ef=self.hnsw_ef, exact=self.exact),
        )
        found = await shard.call(lambda engine: engine.query(request))
        return [to_hit(hit.payload, hit.score) for hit in found]

    async def search_by_examples(self, space: VectorSpace, query: ExampleQuery, *, limit: int,
                                 filter: GalleryFilter | None = None) -> list[GalleryHit]:
        shard = self._shards.get(space.name)
        if shard is None:
            return []
        request = qe.QueryRequest(limit=limit, query=_example_query(query), filter=_edge_filter(filter),
                                  with_payload=True, with_vector=False,
                                  params=qe.SearchParams(hnsw_ef=self.hnsw_ef, exact=self.exact))
        found = await shard.call(lambda engine: engine.query(request))
        return [to_hit(hit.payload, hit.score) for hit in found]

    async def count(self, space: VectorSpace, filter: GalleryFilter | None = None) -> int:
        shard = self._shards.get(space.name)
        if shard is None:
            return 0
        request = qe.CountRequest(exact=True, filter=_edge_filter(filter))
        return await shard.call(lambda engine: engine.count(request))

    async def retrieve(self, space: VectorSpace, ids: Sequence[str]) -> list[GalleryPoint]:
        shard = self._shards.get(space.name)
        if shard is None or not ids:
            return []
        wanted = engine_ids(ids)
        # with_vector must be given although the stubs call it optional (0.9).
        records = await shard.call(lambda engine: engine.retrieve(wanted, True, True))
        return [to_point(r.payload, r.vector) for r in records]

    async def scroll(
        self, space: VectorSpace, *, limit: int, filter: GalleryFilter | None = None, start: str | None = None,
        oldest_checked: bool = False,
    ) -> GalleryPage:
        shard = self._shards.get(space.name)
        if shard is None:
            return GalleryPage([], None)
        order = qe.OrderBy(LINK_CHECKED, qe.Direction.Asc) if oldest_checked else None
        request = qe.ScrollRequest(offset=engine_ids([start])[0] if start and not order else None,
                                   limit=page_limit(limit), filter=_edge_filter(filter), with_payload=True,
                                   with_vector=False, order_by=order)
        records, after = await shard.call(lambda engine: engine.scroll(request))
        if order is not None:
            after = None  # one page, ordered by value: no id cursor
        return GalleryPage([to_point(r.payload, None) for r in records], str(after) if after is not None else None)

    async def optimize(self, space: VectorSpace) -> bool:
        """Build the space's HNSW index in a child process; the space answers
        :class:`GalleryUnavailable` (retryable) meanwhile.

        In-process ``optimize()`` would hold the GIL for the whole build (seconds at
        10k points, minutes at 100k) and freeze every request of the gateway.
        """
        shard = self._shards.get(space.name)
        if shard is None:
            return False
        await shard.run_on_worker(shard.close_engine)
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "search_gateway.gallery.edge_optimize",
                str(shard.path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await child.communicate()
            except BaseException:
                # Cancelled (shutdown): the child holds the shard's lock, so it must be
                # gone before the shard is reopened here. The engine's optimizer swaps
                # segments in atomically, so an interrupted build leaves the old ones.
                child.kill()
                await child.wait()
                raise
        finally:
            engine = await shard.run_on_worker(functools.partial(_load_engine, shard.path, space))
            shard.engine = engine
        if child.returncode != 0:
            raise GalleryUnavailable(
                f"Re-indexing the gallery space at {shard.path} failed (exit {child.returncode}): "
                f"{err.decode(errors='replace').strip()[-500:]}"
            )
        return json.loads(out or b"false") is True

    async def close(self) -> None:
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            await shard.shutdown()


def _read_space(folder: Path) -> VectorSpace:
    content = _read_marker(folder / SPACE_MARKER)
    try:
        space = VectorSpace(
            model=str(content["model"]),
            weights_fingerprint=str(content["weights_fingerprint"]),
            dimension=int(content["dimension"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GalleryCorrupt(f"The gallery space marker in {folder} is incomplete ({exc}). {_WHAT_TO_DO}") from exc
    if space.name != folder.name:
        raise GalleryCorrupt(
            f"The gallery space folder {folder} holds {space.name} according to its marker; "
            f"rename it back or move it aside. Nothing was changed."
        )
    return space

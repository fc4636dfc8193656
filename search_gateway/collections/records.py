"""Private collections' records, kept in the gallery store itself.

Why in the store (not a JSON file under var/): the store's writes are durable when they
return (they survive kill -9), and with a Qdrant server every gateway replica sees the
same records; a file would be one machine's. The records live in a dedicated vector
space of payload-only points (one-dimensional, every vector ``[1]``): ordinary gallery
points for what filters and counts use (``collection``, ``tenant``, ``content_hash``,
``bytes``, ``revision``), with their own fields in ``GalleryPoint.record`` (payload
version 2, gallery/schema.py):

* a collection: ``collection="@collections"``, ``tenant``, ``content_hash=<name>``,
  record ``{"kind": "collection", "name", "created", "updated", "models": [...],
  "deleting": bool}``; ``deleting`` once deleted and while it is being emptied
  (collections/deletion.py): it no longer exists for its tenant, and its name is taken;
* an image of a collection: ``collection=<name>``, ``tenant``, ``content_hash=<sha256>``,
  ``engine`` = its models, ``title`` its file name, ``urls`` where it was fetched from
  (an image: the image layout, no record).

Version 1 wrote a collection's fields into image fields (``first_seen``/``last_seen`` =
created/updated, ``engine`` = the models, ``platform="deleting"``). Such a record is read
by those meanings (``_collection``) and written back in the record layout by its next
write; nothing else needs moving, so a store of version 1 needs no migration step.

An image record has the same id as the image's points in the model spaces, which is
the id the API shows. Counting records by hash (any tenant) says whether a blob is
still referenced.

Several gateway replicas write these records at once, so no write here is a blind
read-then-write: a record carries a ``revision`` that each write renews; a new record is
inserted only where none is (GalleryStore.insert: of two creates of one name, or two
uploads of one picture, exactly one wins), and a change is written only over the
revision it was computed from (GalleryStore.replace_if), so an upload finishing after a
DELETE can never write the record back without its ``deleting`` mark.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from search_gateway.gallery.base import (
    GalleryFilter,
    GalleryPage,
    GalleryPoint,
    GalleryStore,
    GalleryUnavailable,
    VectorSpace,
    pages,
)
from search_gateway.gallery.schema import SIZE_CLASS, class_bytes
from search_gateway.gallery.spaces import WEB

META = VectorSpace("collections", "meta-v1", 1)
_RECORDS = "@collections"
# The reindex jobs' records (reindex.py): bookkeeping like _RECORDS, not images.
JOBS = "@reindex"
# Quota entries (quota.py): images being uploaded (each counts as an image and its bytes),
# and bytes released but not collected yet (bytes only).
RESERVED = "@quota"
RELEASED = "@released"
# Bookkeeping that is not an image of the tenant's.
_NOT_IMAGES = (_RECORDS, JOBS, RELEASED)
# A compare-and-set that keeps losing is a bug or a storm: give up rather than spin.
_CAS_TRIES = 20
_ONE = (1.0,)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
NAME_RULE = "1-48 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
# A search names at most this many collections (a query string is not a listing).
MAX_SEARCHED = 32
# The most image records one page of a listing holds (the store's largest scroll page).
PAGE = 1000


def bad_name(name: str) -> str | None:
    """Why ``name`` cannot name a new collection, or None."""
    if name == WEB:
        return "The collection name 'web' is reserved for images from the public web."
    if not NAME.fullmatch(name):
        return f"A collection name is {NAME_RULE}; {name[:60]!r} is not."
    return None


def _models(point: GalleryPoint) -> tuple[str, ...]:
    return tuple(m for m in point.engine.split(",") if m)


# Version 1's mark of a collection being deleted, in its ``platform`` field.
_DELETING = "deleting"
# The ``kind`` of each record (GalleryPoint.record["kind"]).
COLLECTION_KIND = "collection"


def stamp(moment: datetime) -> str:
    """A moment as a record stores it (ISO 8601, UTC)."""
    return moment.astimezone(UTC).isoformat()


def moment(raw: object) -> datetime | None:
    """A record's stored moment; None where it holds none."""
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


@dataclass(frozen=True)
class Collection:
    name: str
    tenant: str
    created: datetime
    updated: datetime
    models: tuple[str, ...]
    # Deleted, and being emptied in the background: not the tenant's any more.
    deleting: bool = False
    # The record's revision as read: a change is written only over it.
    revision: str = ""


@dataclass(frozen=True)
class Usage:
    """What a tenant holds: images (uploads under way included) and their bytes, each size
    rounded up to its 10% class (schema.size_class), released bytes not collected yet included."""

    images: int
    bytes: int


def new_revision() -> str:
    return uuid.uuid4().hex


def _collection(point: GalleryPoint) -> Collection:
    now = datetime.now(UTC)
    r = point.record
    if not r:  # payload version 1: the fields of an image, reused
        return Collection(point.content_hash, point.tenant or "", point.first_seen or now, point.last_seen or now,
                          _models(point), point.platform == _DELETING, point.revision)
    return Collection(point.content_hash, point.tenant or "", moment(r.get("created")) or now,
                      moment(r.get("updated")) or now, tuple(str(m) for m in r.get("models") or ()),
                      bool(r.get("deleting")), point.revision)


def _record(c: Collection, revision: str) -> GalleryPoint:
    return GalleryPoint(c.name, _ONE, _RECORDS, c.tenant, revision=revision, record={
        "kind": COLLECTION_KIND, "name": c.name, "created": stamp(c.created), "updated": stamp(c.updated),
        "models": list(c.models), "deleting": c.deleting})


class CollectionRecords:
    def __init__(self, store: GalleryStore) -> None:
        self.store = store

    async def _all(self, spec: GalleryFilter) -> list[GalleryPoint]:
        """Every record matching ``spec``, page by page (a tenant's collections: a short list)."""
        return [point async for page in pages(self.store, META, spec, page=PAGE) for point in page]

    async def of_tenant(self, tenant: str) -> list[Collection]:
        found = [_collection(p) for p in await self._all(GalleryFilter(collections=(_RECORDS,), tenant=tenant))]
        return sorted((c for c in found if not c.deleting), key=lambda c: c.name)

    async def deleting(self) -> list[Collection]:
        """Every tenant's collections marked deleting and not yet emptied."""
        return [c for c in map(_collection, await self._all(GalleryFilter(collections=(_RECORDS,)))) if c.deleting]

    async def tenants(self) -> set[str]:
        """Every tenant that has a collection (one record per collection: a short scroll)."""
        return {p.tenant for p in await self._all(GalleryFilter(collections=(_RECORDS,))) if p.tenant is not None}

    async def get(self, tenant: str, name: str) -> Collection | None:
        """The tenant's collection ``name``; None when there is none or it is being deleted."""
        found = await self.find(tenant, name)
        return None if found is None or found.deleting else found

    async def find(self, tenant: str, name: str) -> Collection | None:
        """The record of ``name``, also while it is being deleted (its name is still taken)."""
        found = await self.store.retrieve(META, [GalleryPoint(name, _ONE, _RECORDS, tenant).id])
        return _collection(found[0]) if found else None

    async def mark_deleting(self, collection: Collection) -> None:
        # Unconditional: whatever was written since it was read, the delete wins (and renews the
        # revision, so every change computed from an earlier read is refused from here on).
        await self.store.upsert(META, [_record(replace(collection, deleting=True, updated=datetime.now(UTC)),
                                               new_revision())])

    async def create(self, tenant: str, name: str) -> Collection | None:
        """The new collection; None when the name is taken (by a live collection, one being
        deleted, or a create that won the race for it)."""
        now = datetime.now(UTC)
        mine = Collection(name, tenant, now, now, (), revision=new_revision())
        await self.store.insert(META, [_record(mine, mine.revision)])
        stored = await self.find(tenant, name)
        return mine if stored is not None and stored.revision == mine.revision else None

    async def count_collections(self, tenant: str) -> int:
        """The tenant's collections, those being deleted included (their names are taken)."""
        return await self.store.count(META, GalleryFilter(collections=(_RECORDS,), tenant=tenant))

    async def image_counts(self, tenant: str, names: Sequence[str]) -> dict[str, int]:
        """Images per collection of ``names``, in one facet (a listing costs the same for 3 or 300)."""
        if not names:
            return {}
        found = await self.store.facet(META, "collection", GalleryFilter(collections=tuple(names), tenant=tenant))
        return {name: found.get(name, 0) for name in names}

    async def alive(self, collection: Collection) -> bool:
        """Whether ``collection`` still exists as it was read: not deleted (or being
        deleted) since, nor deleted and created again under the same name."""
        current = await self.get(collection.tenant, collection.name)
        return current is not None and current.created == collection.created

    async def touch(self, collection: Collection, models: Sequence[str]) -> bool:
        """Add ``models`` to the record and stamp it updated; False, writing nothing, when the
        collection is gone or being deleted since it was read: a write then would bring it
        back. Written only over the revision it was merged from (a compare-and-set): a
        delete, or another touch, landing in between makes it read again."""
        for _ in range(_CAS_TRIES):
            current = await self.find(collection.tenant, collection.name)
            if current is None or current.deleting or current.created != collection.created:
                return False
            merged = tuple(dict.fromkeys([*current.models, *models]))
            revision = new_revision()
            await self.store.replace_if(META, _record(replace(current, models=merged, updated=datetime.now(UTC)),
                                                      revision), current.revision)
            stored = await self.find(collection.tenant, collection.name)
            if stored is not None and stored.revision == revision:
                return True
        raise GalleryUnavailable(f"The record of collection {collection.name!r} kept changing while it was "
                                 "updated; try again.")

    async def forget(self, tenant: str, name: str) -> None:
        await self.store.delete(META, [GalleryPoint(name, _ONE, _RECORDS, tenant).id])

    async def count(self, tenant: str, name: str) -> int:
        return await self.store.count(META, GalleryFilter(collections=(name,), tenant=tenant))

    async def image_count(self, tenant: str) -> int:
        """The images of all the tenant's collections (a picture in two counts twice), and
        those of uploads under way (their quota entries, quota.py)."""
        everything = await self.store.count(META, GalleryFilter(tenant=tenant))
        return everything - await self.store.count(META, GalleryFilter(collections=_NOT_IMAGES, tenant=tenant))

    async def usage(self, tenant: str) -> Usage:
        """Images as image_count; bytes summed from their size classes in one facet."""
        classes = await self.store.facet(META, SIZE_CLASS, GalleryFilter(tenant=tenant))
        return Usage(await self.image_count(tenant), sum(class_bytes(int(k)) * n for k, n in classes.items()))

    async def images(self, tenant: str, name: str, limit: int = PAGE, start: str | None = None) -> GalleryPage:
        """One page of the collection's image records in a stable order (by id); ``start``
        is the previous page's ``next``."""
        return await self.store.scroll(META, limit=limit, filter=GalleryFilter(collections=(name,), tenant=tenant),
                                       start=start)

    async def image(self, tenant: str, name: str, id: str) -> GalleryPoint | None:
        found = await self.store.retrieve(META, [id])
        # The id alone names a point; it is the caller's only when tenant and collection match.
        return next((p for p in found if p.tenant == tenant and p.collection == name), None)

    async def image_by_hash(self, tenant: str, name: str, sha256: str) -> GalleryPoint | None:
        return await self.image(tenant, name, GalleryPoint(sha256, _ONE, name, tenant).id)

    async def present(self, tenant: str, name: str, hashes: Sequence[str]) -> list[str]:
        """Which of ``hashes`` this collection holds (fully indexed: the record is written last)."""
        ids = [GalleryPoint(h, _ONE, name, tenant).id for h in hashes]
        found = await self.store.retrieve(META, ids) if ids else []
        held = {p.content_hash for p in found if p.tenant == tenant and p.collection == name}
        return [h for h in dict.fromkeys(hashes) if h in held]

    async def add_image(self, point: GalleryPoint) -> bool:
        """Write the image's record unless the collection holds the picture already; whether
        this write is the one stored (of uploads of one picture at once, exactly one is)."""
        mine = replace(point, vector=_ONE, revision=new_revision())
        await self.store.insert(META, [mine])
        stored = await self.store.retrieve(META, [mine.id])
        return bool(stored) and stored[0].revision == mine.revision

    async def remove_images(self, points: Sequence[GalleryPoint]) -> None:
        await self.store.delete(META, [p.id for p in points])

    async def referenced(self, sha256: str) -> bool:
        """Whether any collection of any tenant still holds this picture."""
        return await self.store.count(META, GalleryFilter(content_hashes=(sha256,))) > 0

    async def holds(self, tenant: str, collection: str, sha256: str) -> bool:
        """Whether the tenant holds a live image with this content: a record of it in a
        collection that is not being deleted. ``collection`` is asked first (one retrieve
        of the image record and its collection's record), then the tenant's others: a
        picture in two collections stays the tenant's while one of them holds it."""
        image, record = GalleryPoint(sha256, _ONE, collection, tenant).id, self._record_id(tenant, collection)
        found = {p.id: p for p in await self.store.retrieve(META, [image, record])}
        held = found.get(image)
        if (held is not None and (held.tenant, held.collection, held.content_hash) == (tenant, collection, sha256)
                and record in found and self._live(found[record], tenant)):
            return True
        others = GalleryFilter(tenant=tenant, content_hashes=(sha256,))
        async for page in pages(self.store, META, others, page=PAGE):
            names = {p.collection for p in page if p.tenant == tenant and p.content_hash == sha256
                     and p.collection not in (_RECORDS, JOBS, collection)}
            records = await self.store.retrieve(META, [self._record_id(tenant, n) for n in names]) if names else []
            if any(self._live(r, tenant) for r in records):
                return True
        return False

    @staticmethod
    def _record_id(tenant: str, name: str) -> str:
        return GalleryPoint(name, _ONE, _RECORDS, tenant).id

    @staticmethod
    def _live(record: GalleryPoint, tenant: str) -> bool:
        # The id names the record; tenant and kind are checked too, as image() does.
        return record.tenant == tenant and record.collection == _RECORDS and not _collection(record).deleting

    async def names(self, tenant: str) -> set[str]:
        """Every collection name the tenant has, those being deleted too (tenant_migration.py)."""
        return {p.content_hash for p in await self._all(GalleryFilter(collections=(_RECORDS,), tenant=tenant))
                if p.tenant == tenant}


async def live_names(store: GalleryStore, tenant: str, /) -> tuple[str, ...]:
    """The names of ``tenant``'s live collections (never one being deleted): what a search
    of "all my collections" searches (search/gallery_source.py's ``TenantCollections``)."""
    return tuple(c.name for c in await CollectionRecords(store).of_tenant(tenant))

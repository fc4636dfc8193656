"""Moving plain API keys' collections from their former tenant names to the keyed ones.

Earlier versions named a plain key's tenant ``key-`` + the first 16 hex digits of the
key's SHA-256 (tenants.legacy_plain_tenant); now it is an HMAC under
``GATEWAY_TENANT_SECRET`` (tenants.plain_tenant). A tenant's name is part of its
points' payload and of their ids, so without a move its collections would vanish for
the key's owner. At every start the gateway moves, for each configured plain key, what
the old name holds to the new one: the records (collections, images, reindex jobs) and
the points in the space of every model the embed server serves. Image ids change with
the tenant (they are derived from it); the pictures, their bytes and tags stay.

Order, so that nothing is ever without its record (the point sweep deletes such points,
point_sweep.py) and a stop at any moment is finished by the next start: copy the records
to the new name; move each space's points (write under the new name, delete the old);
delete the old records last. Every write is idempotent (same ids), so a rerun redoes
nothing wrong, and the old records remain until the end as the sign that work is left.

Only when the new name has no collection the old one lacks (it holds nothing but this
move's own copies): else the owner has used the new name meanwhile, and the gateway
says so in the log and leaves both as they are rather than merge two sets of
collections. Not moved: points in spaces of models the embed server no longer serves
(nothing searches them; a reindex embeds the originals again). The log names a key by
its position in GATEWAY_API_KEYS and never prints the old name, which is the unkeyed hash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from search_gateway.collections.records import META, CollectionRecords
from search_gateway.errors import GatewayError
from search_gateway.gallery.base import GalleryError, GalleryFilter, GalleryPoint, GalleryStore, VectorSpace, pages
from search_gateway.gallery.link import GalleryLink
from search_gateway.tenants import legacy_plain_tenant, parse_api_keys, plain_keys

log = logging.getLogger(__name__)

PAGE = 1000


@dataclass(frozen=True)
class Move:
    entry: int  # the key's position among the plain entries of GATEWAY_API_KEYS, for the log
    old: str
    new: str


def planned_moves(api_keys: Iterable[str], tenant_key: bytes) -> list[Move]:
    """One move per plain key whose old name no configured key uses as its tenant."""
    entries = list(api_keys)
    tenants = parse_api_keys(entries, secret=tenant_key)
    named = set(tenants.values())
    moves = []
    for number, key in enumerate(plain_keys(entries), start=1):
        old = legacy_plain_tenant(key)
        # A TENANT:KEY entry that names the old name keeps it on purpose (an operator's
        # earlier workaround): its data is that tenant's, not this key's.
        if old not in named:
            moves.append(Move(number, old, tenants[key]))
    return moves


async def _relabel(store: GalleryStore, space: VectorSpace, points: Sequence[GalleryPoint], tenant: str) -> None:
    # Read again with vectors (a scroll has none); the new ids follow from the new tenant.
    full = await store.retrieve(space, [p.id for p in points])
    if full:
        await store.upsert(space, [replace(p, tenant=tenant) for p in full])


async def move(store: GalleryStore, spaces: Sequence[VectorSpace], plan: Move) -> int | None:
    """Move one old name's records and points to the new name: how many points moved
    (records included); 0 when the old name holds nothing; None when refused."""
    old_filter = GalleryFilter(tenant=plan.old)
    if not await store.count(META, old_filter):
        return 0
    records = CollectionRecords(store)
    if not await records.names(plan.new) <= await records.names(plan.old):
        log.warning("plain API key %d: collections are stored under its former (unkeyed) tenant name, and its "
                    "tenant %s has collections of its own: nothing moved; move or delete one side by hand",
                    plan.entry, plan.new)
        return None
    moved = 0
    async for page in pages(store, META, old_filter, page=PAGE):
        await _relabel(store, META, [p for p in page if p.tenant == plan.old], plan.new)
    for space in spaces:
        # Deleting a page's points before reading the next is safe (pages() says why).
        async for page in pages(store, space, old_filter, page=PAGE):
            mine = [p for p in page if p.tenant == plan.old]
            if mine:
                await _relabel(store, space, mine, plan.new)
                await store.delete(space, [p.id for p in mine])
                moved += len(mine)
    async for page in pages(store, META, old_filter, page=PAGE):
        mine = [p for p in page if p.tenant == plan.old]
        if mine:
            await store.delete(META, [p.id for p in mine])
            moved += len(mine)
    log.warning("plain API key %d: moved its collections (%d records and points) from its former, unkeyed "
                "tenant name to %s; image ids of these collections have changed", plan.entry, moved, plan.new)
    return moved


async def migrate_until_done(link: GalleryLink, spaces: Callable[[], Awaitable[Sequence[VectorSpace]]],
                             moves: Sequence[Move], retry_s: float) -> None:
    """Run every move once, trying again every ``retry_s`` while the store or the embed
    server (which says what spaces there are) cannot answer."""
    while True:
        try:
            store = (await link.gallery()).store
            # The store alone says whether there is anything to move (nearly always not):
            # the embed server is asked only then.
            pending = [plan for plan in moves if await store.count(META, GalleryFilter(tenant=plan.old))]
            if pending:
                served = await spaces()
                for plan in pending:
                    await move(store, served, plan)
            return
        except (GalleryError, GatewayError) as exc:
            log.warning("plain API keys' tenant names: moving their collections waits (%s); trying again in %.0f s",
                        exc, retry_s)
            await asyncio.sleep(retry_s)

"""Plain API keys' tenant names (issue 19): an HMAC of the key under
GATEWAY_TENANT_SECRET, never a plain hash a guess of the key can be checked against, the
same for the same secret; and the collections stored under a key's former name move to
the new one at start. Real embed and scraper servers, the embedded gallery store and
local blobs in tmp, a gateway started again on the same folders."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from search_gateway.collections.records import META
from search_gateway.config import ConfigError, GatewaySettings
from search_gateway.gallery.base import GalleryFilter
from search_gateway.tenants import parse_api_keys
from tests.support.background import BackgroundServer
from tests.support.collections_support import B, CollectionsClient, collection_settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg
from tests.support.links_support import LEGACY, PLAIN, fetch, thumbnails

pytestmark = pytest.mark.asyncio


def test_a_plain_keys_tenant_is_a_keyed_hash_stable_for_its_secret() -> None:
    tenant = parse_api_keys([PLAIN], secret=b"one secret")[PLAIN]
    assert tenant != LEGACY and LEGACY[4:] not in tenant and PLAIN not in tenant
    assert parse_api_keys([PLAIN], secret=b"one secret")[PLAIN] == tenant, "the same secret: the same name"
    assert parse_api_keys([PLAIN], secret=b"another secret")[PLAIN] != tenant
    settings = GatewaySettings(api_keys=(PLAIN,), tenant_secret=SecretStr("one secret"), gallery="off")
    assert parse_api_keys(settings.api_keys, secret=settings.tenant_key)[PLAIN] == tenant
    # Stored names must not change on a restart: with the gallery on, a plain key needs the secret.
    with pytest.raises(ConfigError, match="GATEWAY_TENANT_SECRET"):
        GatewaySettings(api_keys=(PLAIN,), gallery="on")
    assert GatewaySettings(api_keys=("studio-a:k1",), gallery="on").api_keys == ("studio-a:k1",)


# --- plain keys' collections stored under their former, unkeyed tenant names


async def _eventually(check: Any, what: str) -> Any:
    """Poll ``check`` (async, truthy when done) for the background move; a deadline, not a timing."""
    for _ in range(600):
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def _described(client: CollectionsClient, headers: dict[str, str], name: str) -> Any:
    """The collection ``name`` as GET /collections describes it; None while it is not listed."""
    _, listed = await client.call("GET", "/collections", headers)
    return next((c for c in listed["collections"] if c["name"] == name), None)


async def _held(gw: Any, tenant: str) -> int:
    """Points of ``tenant`` in the records' space and the default model's space."""
    source = gw.app.state.collections.gallery
    store = (await source.link.gallery()).store
    space = await source.space_for("clip")
    return sum([await store.count(s, GalleryFilter(tenant=tenant)) for s in (META, space)])


# Slow: two gateways one after the other over one store (a restart).
@pytest.mark.slow
async def test_a_plain_keys_collections_move_from_its_former_tenant_name(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    y, z = jpeg(65, (300, 250)), jpeg(66, (260, 300))
    key = {"X-API-Key": PLAIN}
    base = collection_settings(embed, scraper, site, tmp_path)
    # An earlier version named this key's tenant LEGACY: written here as that version did.
    before = base.replace(api_keys=(f"{LEGACY}:{PLAIN}", "studio-b:key-b"))
    after = base.replace(api_keys=(PLAIN, "studio-b:key-b"), tenant_secret="tenant secret of this site")
    tenant = parse_api_keys(after.api_keys, secret=after.tenant_key)[PLAIN]
    async with aiohttp.ClientSession() as http:
        async with run_gateway(before) as gw:
            client = CollectionsClient(http, gw)
            for headers in (key, B):
                assert (await client.call("POST", "/collections", headers, json={"name": "flash"}))[0] == 201
            old_ids = await client.added("flash", [y, z], headers=key)
            b_ids = await client.added("flash", [y], headers=B)
            assert await _held(gw, LEGACY) > 2

        for run in ("moved", "started again"):
            async with run_gateway(after) as gw:
                client = CollectionsClient(http, gw)

                flash = functools.partial(_described, client, key, "flash")
                assert (await _eventually(flash, "the key's collection is back"))["images"] == 2, run
                links = await thumbnails(client, "flash", key)
                assert len(links) == 2
                for link in links.values():
                    assert await fetch(http, link, key) == (200, "jpeg")
                _, listed = await client.call("GET", "/collections/flash/images", key)
                ids = {i["id"] for i in listed["images"]}
                assert not ids & set(old_ids), "ids derive from the tenant: they change with it"
                # The model space's points moved too: the search finds the picture.
                assert [r["id"] for r in await client.search(z, "clip", "flash", key)][0] in ids
                assert await _held(gw, LEGACY) == 0 and await _held(gw, tenant) > 2
                _, theirs = await client.call("GET", "/collections/flash/images", B)
                assert [i["id"] for i in theirs["images"]] == b_ids, "another tenant is left alone"


async def test_nothing_moves_when_the_new_tenant_name_has_collections_of_its_own(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    key, other = {"X-API-Key": PLAIN}, {"X-API-Key": "another-key"}
    base = collection_settings(embed, scraper, site, tmp_path)
    after = base.replace(api_keys=(PLAIN,), tenant_secret="tenant secret of this site")
    tenant = parse_api_keys(after.api_keys, secret=after.tenant_key)[PLAIN]
    async with aiohttp.ClientSession() as http:
        async with run_gateway(base.replace(api_keys=(f"{LEGACY}:{PLAIN}", f"{tenant}:another-key"))) as gw:
            client = CollectionsClient(http, gw)
            assert (await client.call("POST", "/collections", key, json={"name": "former"}))[0] == 201
            assert (await client.call("POST", "/collections", other, json={"name": "fresh"}))[0] == 201
        with caplog.at_level(logging.WARNING, logger="search_gateway.collections.tenant_migration"):
            async with run_gateway(after) as gw:
                async def refused() -> bool:
                    return "has collections of its own: nothing moved" in caplog.text

                await _eventually(refused, "the refusal is logged")
                _, listed = await CollectionsClient(http, gw).call("GET", "/collections", key)
                assert [c["name"] for c in listed["collections"]] == ["web", "fresh"]
                assert await _held(gw, LEGACY) == 1, "the former name's collection is left as it was"
        assert LEGACY not in caplog.text and LEGACY[4:] not in caplog.text, "the log never prints the unkeyed hash"

"""A tenant's image quota (GATEWAY_TENANT_MAX_IMAGES): one customer cannot fill the
disks; past it an upload's new images are rejected with the reason, the others still
added, duplicates free, and another tenant's room untouched. Real embed and scraper
servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.search_gateway.collections_support import B, CollectionsClient
from tests.search_gateway.collections_support import collection_settings as _settings
from tests.search_gateway.conftest import Site
from tests.search_gateway.gateway_support import run_gateway
from tests.support.background import BackgroundServer
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio


async def test_past_its_quota_a_tenants_new_images_are_rejected_and_the_rest_still_added(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    pictures = [jpeg(190 + i, (210 + 8 * i, 200)) for i in range(5)]
    settings = _settings(embed, scraper, site, tmp_path, tenant_max_images=3)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        c = CollectionsClient(http, gw)
        for name in ("flash", "portfolio"):
            assert (await c.call("POST", "/collections", json={"name": name}))[0] == 201
        first = await c.added("flash", pictures[:2], "clip")

        # Counted across collections: one more fits, in another collection; a duplicate is free.
        status, body = await c.upload("portfolio", [pictures[2], pictures[3]], "clip")
        assert status == 200, body
        added, refused = body["results"]
        assert added["status"] == "added", added
        assert refused["status"] == "rejected" and "(3)" in refused["reason"], refused
        status, body = await c.upload("flash", [pictures[0], pictures[4]], "clip")
        assert [r["status"] for r in body["results"]] == ["duplicate", "rejected"], body
        status, listed = await c.call("GET", "/collections")
        assert listed["usage"] == {"images": 3, "max_images": 3}, listed

        # Another tenant has its own room.
        assert (await c.call("POST", "/collections", B, json={"name": "flash"}))[0] == 201
        assert len(await c.added("flash", pictures[:3], "clip", headers=B)) == 3

        # Room again once an image is deleted.
        assert (await c.call("DELETE", f"/collections/flash/images/{first[1]}"))[0] == 204
        assert len(await c.added("flash", [pictures[4]], "clip")) == 1
        assert (await c.call("GET", "/collections"))[1]["usage"]["images"] == 3

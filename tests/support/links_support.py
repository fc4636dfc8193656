"""What the thumbnail-link and tenant-name tests share: fetching a link as a tenant, the
links a collection's images have, and a plain key with the tenant name earlier versions gave it."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp

from tests.support.collections_support import A, CollectionsClient

PLAIN = "hunter2"
# What earlier versions named PLAIN's tenant: "key-" + 16 hex digits of its SHA-256.
LEGACY = "key-" + hashlib.sha256(PLAIN.encode()).hexdigest()[:16]


async def fetch(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Status and body of a thumbnail link: the JPEG's type, or the error without its request id."""
    async with http.get(url, headers=headers) as resp:
        if resp.content_type == "image/jpeg":
            return resp.status, "jpeg"
        body = await resp.json()
        return resp.status, {k: v for k, v in body.items() if k != "request_id"}


async def thumbnails(client: CollectionsClient, name: str, headers: dict[str, str] = A) -> dict[str, str]:
    """sha256 -> the thumbnail link GET /collections/{name}/images/{id} gives, for every image listed."""
    status, listed = await client.call("GET", f"/collections/{name}/images", headers)
    assert status == 200, listed
    links = {}
    for image in listed["images"]:
        status, one = await client.call("GET", f"/collections/{name}/images/{image['id']}", headers)
        assert status == 200, one
        links[one["sha256"]] = client.gw.url + one["thumbnail"]
    return links

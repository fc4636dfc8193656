"""Thumbnail links of private collections (issue 19): a link answers only while its
tenant holds the picture in a live collection, every refusal reads alike, and a link
gives away nothing of what it stands for (tenant, collection, picture, URL).
Real embed and scraper servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

import aiohttp
import pytest

from search_gateway.http.thumbnails import ThumbnailSigner, blob_url
from search_gateway.tenants import parse_api_keys
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, B, CollectionsClient, collection_settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg
from tests.support.links_support import LEGACY, PLAIN, fetch, thumbnails

pytestmark = pytest.mark.asyncio


async def test_a_private_link_answers_only_while_its_tenant_holds_the_picture(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    y, z = jpeg(61, (300, 240)), jpeg(62, (280, 250))
    async with aiohttp.ClientSession() as http, run_gateway(collection_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        for headers in (A, B):
            assert (await client.call("POST", "/collections", headers, json={"name": "flash"}))[0] == 201
        await client.added("flash", [y], headers=B)
        ids = await client.added("flash", [y, z])
        (theirs,) = (await thumbnails(client, "flash", B)).values()
        mine = await thumbnails(client, "flash")
        y_hash, z_hash = [(await client.call("GET", f"/collections/flash/images/{i}"))[1]["sha256"] for i in ids]
        # The search's own links (routes.py) are checked alike.
        found = [r for r in await client.search(y, "clip", "flash") if r["id"] == ids[0]]
        searched = gw.url + found[0]["thumbnail_url"]
        # What a link that never stood for anything answers: every refusal must read exactly so.
        never = gw.url + "/thumbnails/" + gw.app.state.search.signer.sign(blob_url("studio-a", "flash", "0" * 64))
        status, refused = await fetch(http, never, A)
        assert status == 404, refused

        for link in (mine[y_hash], mine[z_hash], searched):
            assert await fetch(http, link, A) == (200, "jpeg")
            assert await fetch(http, link, B) == (404, refused), "another tenant's key: as if it never existed"
        assert await fetch(http, theirs, B) == (200, "jpeg")

        for image in ids:
            assert (await client.call("DELETE", f"/collections/flash/images/{image}"))[0] == 204
        # Y's bytes are still stored (B holds them), Z's are gone: both links read alike.
        for link in (mine[y_hash], mine[z_hash], searched):
            assert await fetch(http, link, A) == (404, refused)
        assert await fetch(http, theirs, B) == (200, "jpeg")


async def test_a_link_answers_while_any_live_collection_of_its_tenant_holds_the_picture(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    y = jpeg(63, (310, 240))
    async with aiohttp.ClientSession() as http, run_gateway(collection_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        for name in ("flash", "keep"):
            assert (await client.call("POST", "/collections", A, json={"name": name}))[0] == 201
        (in_flash,) = await client.added("flash", [y])
        await client.added("keep", [y])
        (flash_link,) = (await thumbnails(client, "flash")).values()
        (keep_link,) = (await thumbnails(client, "keep")).values()
        never = gw.url + "/thumbnails/" + gw.app.state.search.signer.sign(blob_url("studio-a", "keep", "0" * 64))
        _, refused = await fetch(http, never, A)

        assert (await client.call("DELETE", f"/collections/flash/images/{in_flash}"))[0] == 204
        assert await fetch(http, flash_link, A) == (200, "jpeg"), "'keep' still holds the picture"
        # A deleted collection is gone at once, every route: before the background emptying too.
        assert (await client.call("DELETE", "/collections/keep"))[0] == 204
        for link in (flash_link, keep_link):
            assert await fetch(http, link, A) == (404, refused)
        await gw.app.state.collections.deleter.settled()
        for link in (flash_link, keep_link):
            assert await fetch(http, link, A) == (404, refused)


def _decodings(token: str) -> list[bytes]:
    """The token itself and every base64 reading of it and of its parts, at every alignment."""
    out = [token.encode()]
    for part in [token, *re.split(r"[^A-Za-z0-9_-]", token)]:
        for skip in range(4):
            text = part[skip:] + "=" * (-len(part[skip:]) % 4)
            for decode in (base64.urlsafe_b64decode, base64.b64decode):
                try:
                    out.append(decode(text))
                except (binascii.Error, ValueError):
                    pass
    return out


def _reveals(token: str, secrets: list[bytes]) -> list[bytes]:
    return [s for s in secrets for d in _decodings(token) if s in d or s.lower() in d.lower()]


def test_a_web_link_reveals_nothing_of_its_url() -> None:
    token = ThumbnailSigner("secret", 60).sign("https://img.example/a.jpg", {"Referer": "https://www.pinterest.com/"})
    assert not _reveals(token, [b"img.example", b"pinterest", b"Referer", b'"u"'])


async def test_a_private_link_reveals_neither_tenant_nor_picture_nor_key(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    picture = jpeg(64, (290, 250))
    key = {"X-API-Key": PLAIN}
    settings = collection_settings(embed, scraper, site, tmp_path).replace(
        api_keys=(PLAIN, "studio-b:key-b"), tenant_secret="tenant secret of this site")
    tenant = parse_api_keys(settings.api_keys, secret=settings.tenant_key)[PLAIN]
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", key, json={"name": "flash"}))[0] == 201
        status, body = await client.upload("flash", [picture], headers=key)
        assert status == 200 and body["results"][0]["status"] == "added", body
        links = await thumbnails(client, "flash", key)
        ((sha256, link),) = links.items()
        links["search"] = gw.url + (await client.search(picture, "clip", "flash", key))[0]["thumbnail_url"]
        links["upload"] = gw.url + body["results"][0]["thumbnail"]
        secrets = [tenant.encode(), LEGACY.encode(), LEGACY[4:].encode(), PLAIN.encode(), sha256.encode(),
                   bytes.fromhex(sha256), b"flash", b"blob:"]
        for name, url in links.items():
            token = url.rsplit("/", 1)[1]
            assert not _reveals(token, secrets), (name, _reveals(token, secrets))
            assert await fetch(http, url, key) == (200, "jpeg")


def test_the_decodings_would_see_a_readable_token() -> None:
    """The check above can fail: the former format (base64 JSON) is caught by it."""
    former = base64.urlsafe_b64encode(b'{"u":"blob:' + LEGACY.encode() + b'/abc"}').decode().rstrip("=") + ".c2ln"
    assert _reveals(former, [LEGACY[4:].encode()])

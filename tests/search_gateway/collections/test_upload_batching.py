"""An upload request's images are embedded together, a few per Embed call (issue 13, "Speed"):
one call per image kept the embed server's batches at one image per request in flight.
Real embed and scraper servers, the embedded gallery store and local blobs in tmp."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg

pytestmark = pytest.mark.asyncio


async def test_an_upload_embeds_its_images_in_batches_and_keeps_one_result_per_input_in_order(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    settings = gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=tmp_path / "gallery",
                                blobs_path=tmp_path / "blobs", embed_batch=3)
    stored, new = jpeg(61, (220, 200)), [jpeg(62 + i, (200 + 8 * i, 180)) for i in range(4)]
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        client = gw.app.state.search.embed
        real = client.embed
        calls: list[tuple[str, int]] = []

        async def counted(model: str, images: Sequence[bytes], **options: Any) -> Any:
            calls.append((model, len(images)))  # the real call goes on to the real embed server
            return await real(model, images, **options)

        client.embed = counted
        async with http.post(f"{gw.url}/collections", json={"name": "flash"}) as resp:
            assert resp.status == 201
        form = aiohttp.FormData()
        form.add_field("file", stored, filename="stored.jpg", content_type="image/jpeg")
        async with http.post(f"{gw.url}/collections/flash/images", data=form) as resp:
            assert resp.status == 200
            stored_id = (await resp.json())["results"][0]["id"]
        models = sorted({m for m, _ in calls})
        calls.clear()

        form = aiohttp.FormData()
        for name, data in [("a", new[0]), ("old", stored), ("b", new[1]), ("junk", b"not an image at all"),
                           ("a-again", new[0]), ("c", new[2]), ("d", new[3])]:
            form.add_field("file", data, filename=f"{name}.jpg", content_type="image/jpeg")
        async with http.post(f"{gw.url}/collections/flash/images", data=form) as resp:
            body = await resp.json()
        assert resp.status == 200, body
        results = body["results"]
        assert [(r["input"], r["status"]) for r in results] == [
            ("a.jpg", "added"), ("old.jpg", "duplicate"), ("b.jpg", "added"), ("junk.jpg", "rejected"),
            ("a-again.jpg", "duplicate"), ("c.jpg", "added"), ("d.jpg", "added")], results
        assert results[1]["id"] == stored_id and results[4]["id"] == results[0]["id"], results
        assert "not an image" in results[3]["reason"], results[3]
        # The four new pictures, per model, in calls of at most GATEWAY_EMBED_BATCH (3) images:
        # neither the duplicates nor the rejected input are embedded.
        for model in models:
            assert [n for m, n in calls if m == model] == [3, 1], calls
        async with http.get(f"{gw.url}/collections") as resp:
            listed = {c["name"]: c.get("images") for c in (await resp.json())["collections"]}
        assert listed["flash"] == 5

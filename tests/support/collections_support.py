"""What the collection tests share: two tenants' keys, a gateway's settings with the
gallery, the blob store and both tenants, and a client of the collection routes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings
from tests.support.gateway_support import RunningGateway

A, B = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}


def collection_settings(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path, **more: Any) -> Any:
    # blobs_release_grace_s=0: these tests delete what they uploaded a second ago and expect
    # its bytes gone; the grace itself is tested with its default (test_collection_deletion).
    settings: dict[str, Any] = {"blobs_release_grace_s": 0, **more}
    return gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=tmp / "gallery",
                            blobs_path=tmp / "blobs", api_keys=("studio-a:key-a", "studio-b:key-b"), **settings)


class CollectionsClient:
    """The collection routes over real HTTP, as tenant A unless told otherwise."""

    def __init__(self, http: aiohttp.ClientSession, gw: RunningGateway) -> None:
        self.http, self.gw = http, gw

    async def call(self, method: str, path: str, headers: dict[str, str] = A, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.gw.url + path, headers=headers, **kw) as resp:
            return resp.status, (await resp.json() if resp.content_type == "application/json" else await resp.text())

    async def upload(self, name: str, pictures: list[bytes], *models: str,
                     headers: dict[str, str] = A) -> tuple[int, Any]:
        form = aiohttp.FormData()
        for i, picture in enumerate(pictures):
            form.add_field("file", io.BytesIO(picture), filename=f"design-{i}.jpg", content_type="image/jpeg")
        for model in models:
            form.add_field("embedding_model", model)
        return await self.call("POST", f"/collections/{name}/images", headers, data=form)

    async def added(self, name: str, pictures: list[bytes], *models: str, headers: dict[str, str] = A) -> list[str]:
        """Uploads that must all come back ``added``: their ids."""
        status, body = await self.upload(name, pictures, *models, headers=headers)
        assert status == 200 and [r["status"] for r in body["results"]] == ["added"] * len(pictures), body
        return [r["id"] for r in body["results"]]

    async def collection(self, name: str, headers: dict[str, str] = A) -> dict[str, Any]:
        status, body = await self.call("GET", "/collections", headers)
        assert status == 200, body
        return dict(next(c for c in body["collections"] if c["name"] == name))

    async def search(self, picture: bytes, model: str, name: str | None, headers: dict[str, str] = A) -> list[dict[str, Any]]:
        """Gallery results only; from ``name``, or (None) from web and every collection of the caller."""
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(picture), filename="query.jpg", content_type="image/jpeg")
        params = {"embedding_model": model, "sources": "gallery", "max_results": "50"}
        if name is not None:
            params["collections"] = name
        status, body = await self.call("POST", "/search", headers, data=form, params=params)
        assert status == 200, body
        return list(body["results"])

    async def indexed(self, name: str, model: str) -> bool:
        state = (await self.collection(name))["index"].get(model, {})
        assert state.get("state") != "failed", state
        return bool(state.get("state") == "indexed")

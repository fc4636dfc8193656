"""What the collection tests share: two tenants' keys, and a gateway's settings with
the gallery, the blob store and both tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.search_gateway.conftest import Site, gateway_settings
from tests.support.background import BackgroundServer

A, B = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}


def collection_settings(embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp: Path, **more: Any) -> Any:
    return gateway_settings(embed.target, scraper.target, site, gallery="on", gallery_path=tmp / "gallery",
                            blobs_path=tmp / "blobs", api_keys=("studio-a:key-a", "studio-b:key-b"), **more)

"""The gateway's collection routes over HTTP, with retries where a retry can help.

Retried with back-off (honouring ``Retry-After``): 429 (rate limit), 502/503/504 (the
gateway or its store is busy, restarting or behind a proxy that lost it) and connection
errors (the gateway went away). Never retried: any other 4xx (the request itself is
wrong: retrying gives the same answer) and 500 (a bug). Re-sending an upload is safe:
the gateway answers ``duplicate`` for what the lost attempt had already added.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from search_gateway.importer.sources import Source

RETRIED = frozenset({429, 502, 503, 504})
_FILES_LIMIT = re.compile(r"At most (\d+) images per request")
_BYTES_LIMIT = re.compile(r"over the (\d+)-byte limit")


class Refused(Exception):
    """The gateway refused for a reason no retry fixes (bad key, unknown collection)."""


class GaveUp(Exception):
    """Still failing after every retry: the inputs are reported failed, to send again later."""


@dataclass(frozen=True)
class TooLarge(Exception):
    """413: the batch is over a per-request limit; the number it named, when it named one."""

    detail: str
    max_files: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Retry:
    attempts: int = 8
    first_s: float = 0.5
    max_s: float = 30.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_s, self.first_s * 2 ** attempt) * random.uniform(0.5, 1.0)
        return float(max(backoff, min(retry_after or 0.0, self.max_s * 4)))


class GatewayClient:
    def __init__(self, http: aiohttp.ClientSession, base: str, collection: str, retry: Retry) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.collection = collection
        self.path = f"/collections/{quote(collection, safe='')}"
        self.retry = retry

    async def _call(self, method: str, path: str, body: Callable[[], Any] | None = None,
                    json: Any = None) -> tuple[int, Any]:
        last = ""
        for attempt in range(self.retry.attempts + 1):
            retry_after: float | None = None
            try:
                data = body() if body is not None else None
                async with self.http.request(method, self.base + path, data=data, json=json) as resp:
                    payload = await resp.json() if resp.content_type == "application/json" else await resp.text()
                    if resp.status not in RETRIED:
                        return resp.status, payload
                    last = f"HTTP {resp.status}: {_detail(payload)}"
                    header = resp.headers.get("Retry-After", "")
                    retry_after = float(header) if header.replace(".", "", 1).isdigit() else None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retry.attempts:
                await asyncio.sleep(self.retry.wait(attempt, retry_after))
        raise GaveUp(f"the gateway did not answer after {self.retry.attempts + 1} attempts ({last})")

    async def ensure_collection(self, create: bool) -> None:
        status, payload = await self._call("GET", "/collections")
        _raise_for(status, payload, "listing the collections")
        names = {c.get("name") for c in payload.get("collections", [])}
        if self.collection in names:
            return
        if not create:
            raise Refused(f"There is no collection {self.collection!r} at {self.base}; "
                               "pass --create to create it.")
        status, payload = await self._call("POST", "/collections", json={"name": self.collection})
        if status != 409:  # created meanwhile by another run: fine
            _raise_for(status, payload, "creating the collection")

    async def present(self, hashes: list[str]) -> set[str]:
        status, payload = await self._call("POST", f"{self.path}/hashes", json={"sha256": hashes})
        _raise_for(status, payload, "asking which files the collection holds")
        return set(payload.get("present", []))

    async def upload(self, batch: list[Source], files: dict[Path, bytes]) -> list[dict[str, Any]]:
        """One result per input, in order; TooLarge when the batch passes a per-request limit."""

        def form() -> aiohttp.FormData:  # a new body per attempt: a sent FormData cannot be sent again
            data = aiohttp.FormData(default_to_multipart=True)  # the route takes multipart only, also for URLs
            for s in batch:
                if s.path is not None:
                    data.add_field("file", files[s.path], filename=s.path.name,
                                   content_type="application/octet-stream")
                else:
                    data.add_field("url", s.url or "")
            return data

        status, payload = await self._call("POST", f"{self.path}/images", body=form)
        if status == 413:
            detail = _detail(payload)
            files_limit, bytes_limit = _FILES_LIMIT.search(detail), _BYTES_LIMIT.search(detail)
            raise TooLarge(detail, int(files_limit[1]) if files_limit else None,
                           int(bytes_limit[1]) if bytes_limit else None)
        _raise_for(status, payload, "uploading")
        results: list[dict[str, Any]] = payload["results"]
        if len(results) != len(batch):
            raise Refused(f"The gateway answered {len(results)} results for {len(batch)} inputs.")
        return results


def _detail(payload: Any) -> str:
    return str(payload.get("detail", payload)) if isinstance(payload, dict) else str(payload)[:200]


def _raise_for(status: int, payload: Any, doing: str) -> None:
    if status >= 400:
        hint = " (set TATTOO_API_KEY)" if status == 401 else ""
        raise Refused(f"The gateway refused {doing}: HTTP {status}: {_detail(payload)}{hint}")

"""The gateway's collection routes over HTTP, with retries where a retry can help.

Retried with back-off (honouring ``Retry-After``): 429 (rate limit), 502/503/504 (the
gateway or its store is busy, restarting or behind a proxy that lost it) and connection
errors (the gateway went away). Never retried: any other 4xx (the request itself is
wrong: retrying gives the same answer) and 500 (a bug). Re-sending an upload is safe:
the gateway answers ``duplicate`` for what the lost attempt had already added.

A gateway that is gone is not retried for ever: once no request has got through
(connection errors, timeouts, 502/503/504) for ``Retry.give_up_s`` seconds, counted
from the first failure of any request since the last one that got an answer, the
client gives up for the rest of the run: the request that notices raises
``Unreachable``, and so does every later one at once, without sending anything. A 429
is an answer (the gateway is there, asking to slow down): it ends an outage.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bulk_importer.sources import Source

RETRIED = frozenset({429, 502, 503, 504})
_FILES_LIMIT = re.compile(r"At most (\d+) images per request")
_BYTES_LIMIT = re.compile(r"over the (\d+)-byte limit")


class Refused(Exception):
    """The gateway refused for a reason no retry fixes (bad key, unknown collection)."""


class GaveUp(Exception):
    """Still failing after every retry: the inputs are reported failed, to send again later."""


class Unreachable(GaveUp):
    """The gateway has not been reached for ``Retry.give_up_s``: nothing more is sent in this run."""


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
    # How long the gateway may stay unreachable before the run stops sending (--give-up-after).
    give_up_s: float = 60.0

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
        # When the current outage began (the first failure since the last answer); None: no outage.
        self._down_since: float | None = None
        # Set once the outage passed give_up_s: why the run stopped sending.
        self.gone: str | None = None

    async def _call(self, method: str, path: str, body: Callable[[], Any] | None = None,
                    json: Any = None) -> tuple[int, Any]:
        last = ""
        for attempt in range(self.retry.attempts + 1):
            if self.gone is not None:  # this or another request gave up: send nothing more
                raise Unreachable(self.gone)
            retry_after: float | None = None
            try:
                data = body() if body is not None else None
                async with self.http.request(method, self.base + path, data=data, json=json) as resp:
                    payload = await resp.json() if resp.content_type == "application/json" else await resp.text()
                    if resp.status not in RETRIED:
                        self._down_since = None
                        return resp.status, payload
                    last = f"HTTP {resp.status}: {_detail(payload)}"
                    header = resp.headers.get("Retry-After", "")
                    retry_after = float(header) if header.replace(".", "", 1).isdigit() else None
                    self._failed(reached=resp.status == 429)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._failed(reached=False)
            left = self._outage_left(last)
            if attempt < self.retry.attempts:
                await asyncio.sleep(min(self.retry.wait(attempt, retry_after), left))
        raise GaveUp(f"the gateway did not answer after {self.retry.attempts + 1} attempts ({last})")

    def _failed(self, *, reached: bool) -> None:
        if reached:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()

    def _outage_left(self, last: str) -> float:
        """Seconds the outage may still last (inf when there is none); raises
        Unreachable, for this run, once it has lasted give_up_s."""
        if self._down_since is None:
            return float("inf")
        left = self._down_since + self.retry.give_up_s - time.monotonic()
        if left <= 0:
            if self.gone is None:
                self.gone = (f"Not sent or not confirmed: the gateway at {self.base} could not be reached for "
                             f"{self.retry.give_up_s:g} s (last: {last}); run again to send these.")
            raise Unreachable(self.gone)
        return left

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

"""Helpers for the scraper tests: the fake web that stands in for DuckDuckGo, and client helpers."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from ddgs.exceptions import DDGSException

from tattoo_search.v1 import scraper_pb2, scraper_pb2_grpc

_SITE = re.compile(r"\bsite:(\S+)")

Handler = Callable[[str, int], list[dict[str, Any]]]


def ddgs_results(domain: str, n: int, prefix: str = "img", start: int = 0) -> list[dict[str, Any]]:
    """Results shaped like ``DDGS().images()``: strings for sizes, a Bing thumbnail."""
    host = {
        "pinterest.com": "i.pinimg.com/736x",
        "reddit.com": "i.redd.it",
        "instagram.com": "scontent.cdninstagram.com/v",
    }
    return [
        {
            "title": f"{prefix} {i} on {domain}",
            "image": f"https://{host.get(domain, domain)}/{prefix}-{i}.jpg",
            "thumbnail": f"https://tse2.mm.bing.net/th?id=OIP.{prefix}{i}",
            "url": f"https://www.{domain}/post/{prefix}-{i}/",
            "height": "1200",
            "width": "800",
            "source": "Bing",
        }
        for i in range(start, start + n)
    ]


@dataclass
class Call:
    query: str
    domain: str
    kwargs: dict[str, Any]
    started: float
    finished: float | None = None


@dataclass
class FakeWeb:
    """What the fake ``DDGS`` answers, per ``site:`` domain, and a log of every call.

    A handler gets the query without its ``site:`` filter and how many calls that domain
    has had before; it returns ddgs-shaped dicts or raises a ddgs exception.
    """

    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, domain: str, handler: Handler | list[dict[str, Any]]) -> None:
        self.handlers[domain] = handler if callable(handler) else (lambda q, n, r=handler: list(r))

    def calls_for(self, domain: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.domain == domain]

    def images(self, query: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        match = _SITE.search(query)
        domain = match.group(1) if match else ""
        bare = _SITE.sub("", query).strip()
        with self.lock:
            previous = sum(1 for c in self.calls if c.domain == domain)
            call = Call(bare, domain, kwargs, time.monotonic())
            self.calls.append(call)
        try:
            handler = self.handlers.get(domain)
            results = handler(bare, previous) if handler else []
        finally:
            call.finished = time.monotonic()
        if not results:  # what the real ddgs does when nothing is found
            raise DDGSException("No results found.")
        return results


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def read_all(call: grpc.aio.UnaryStreamCall) -> list[scraper_pb2.Candidate]:
    """The rest of a stream, read with ``read()`` (grpc forbids mixing it with ``async for``)."""
    results = []
    while (message := await call.read()) is not grpc.aio.EOF:
        results.append(message)
    return results


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def collect(
    stub: scraper_pb2_grpc.ScraperServiceStub, **request: Any
) -> tuple[list[scraper_pb2.Candidate], dict[str, str]]:
    """All candidates of one Search call, and its trailing metadata."""
    call = stub.Search(scraper_pb2.SearchRequest(**request), timeout=10)
    results = [c async for c in call]
    trailing = dict(await call.trailing_metadata() or ())
    return results, trailing

"""Retrieval through the product's own gallery search (issue 15): the figure is the product's.

`GatewayGallery` puts a benchmark's gallery into a private collection of a running
gateway (`POST /collections`, then `POST /collections/{name}/images` in batches),
searches it with each query image (`POST /search?collections=<name>&sources=gallery`)
and maps the result ids back to gallery indices; the collection is deleted when the
`with` block ends, also on error. The gateway embeds every image itself (its own
decoding, its own embed server), so what is measured is what a user of the gateway
gets. Two gallery images with identical bytes are one gallery point: both indices
take that point's place in a ranking, in index order (as the exact retriever breaks
ties). A search returns at most the gateway's max_results limit (read from
/openapi.json, else 100): a gallery larger than that gives truncated rankings, and
the report says so.

Plain urllib (no third-party client): the harness should run wherever Python does.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from bench.quality.embedding import image_key
from bench.quality.layouts import Benchmark
from bench.quality.retrieval import Retriever

DEFAULT_LIMIT = 100  # the gateway's default GATEWAY_MAX_RESULTS_LIMIT, when /openapi.json does not say


class GatewayError(RuntimeError):
    """The gateway refused or failed a call; the message names the call and its answer."""


class GatewayClient:
    """JSON and multipart calls to one gateway, with an optional API key (X-API-Key)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120) -> None:
        self.url = url.rstrip("/")
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = timeout

    def call(self, method: str, path: str, *, params: dict[str, str] | None = None, json_body: Any = None,
             files: Sequence[bytes] = (), fields: dict[str, str] | None = None, expect: int = 200) -> Any:
        """The decoded JSON reply (None when empty); GatewayError unless the status is `expect`."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = dict(self._headers)
        data: bytes | None = None
        if json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif files or fields:
            data, headers["Content-Type"] = _multipart(files, fields or {})
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise GatewayError(f"{method} {path}: no answer from {self.url}: {exc}") from exc
        if status != expect:
            raise GatewayError(f"{method} {path} answered {status}: {_detail(body)}")
        return json.loads(body) if body else None


def _multipart(files: Sequence[bytes], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "quality-" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for number, payload in enumerate(files):
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{number}.img"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + payload + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _detail(body: bytes) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    return str(decoded.get("detail", decoded)) if isinstance(decoded, dict) else str(decoded)[:200]


def max_results_limit(client: GatewayClient) -> tuple[int, str]:
    """(the largest max_results /search accepts, where that figure came from)."""
    try:
        document = client.call("GET", "/openapi.json")
        parameters = document["paths"]["/search"]["post"]["parameters"]
        limit = next(int(p["schema"]["maximum"]) for p in parameters if p.get("name") == "max_results")
    except (GatewayError, KeyError, TypeError, ValueError, StopIteration):
        return DEFAULT_LIMIT, f"assumed {DEFAULT_LIMIT}: /openapi.json does not state it"
    return limit, "from /openapi.json"


class GatewayGallery:
    """A `Retriever` over `benchmark`'s gallery held in a private collection of the gateway.

    Use as a context manager: entering creates and fills the collection, leaving deletes it.
    `search` takes the query rows only to count them: the gateway embeds the query images itself.
    """

    def __init__(self, client: GatewayClient, benchmark: Benchmark, model: str, *, batch: int = 16,
                 limit: int | None = None) -> None:
        self._client, self._benchmark, self._model = client, benchmark, model
        self._batch = max(1, batch)
        self.limit, self.limit_source = (limit, "given") if limit else max_results_limit(client)
        # Short random suffix: two runs (or a leftover of a crashed one) never collide.
        self.collection = f"quality-{_slug(benchmark.name)}-{secrets.token_hex(3)}"
        self._indices_of: dict[str, list[int]] = {}  # gallery point id -> gallery indices (duplicates share one)
        self._created = False

    def __enter__(self) -> GatewayGallery:
        self._client.call("POST", "/collections", json_body={"name": self.collection}, expect=201)
        self._created = True
        try:
            self._upload()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._created:
            self._created = False
            self._client.call("DELETE", f"/collections/{self.collection}", expect=204)

    def _upload(self) -> None:
        gallery = self._benchmark.gallery
        for start in range(0, len(gallery), self._batch):
            payloads = [image_key(ref)[1] for ref in gallery[start : start + self._batch]]
            reply = self._client.call("POST", f"/collections/{self.collection}/images", files=payloads,
                                      fields={"embedding_model": self._model})
            results = reply.get("results", []) if isinstance(reply, dict) else []
            if len(results) != len(payloads):
                raise GatewayError(f"an upload of {len(payloads)} images got {len(results)} results back")
            for offset, entry in enumerate(results):
                index = start + offset
                if entry.get("status") not in ("added", "duplicate") or not entry.get("id"):
                    raise GatewayError(f"the gateway did not take gallery image {gallery[index].path}: "
                                       f"{entry.get('status')}: {entry.get('reason', '')}")
                self._indices_of.setdefault(str(entry["id"]), []).append(index)

    @property
    def size(self) -> int:
        return len(self._benchmark.gallery)

    @property
    def depth(self) -> int:
        # Every point fits in one answer: whole rankings. Else the top `limit` points, each at least one index.
        return self.size if self.limit >= len(self._indices_of) else self.limit

    def search(self, queries: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        if len(queries) != len(self._benchmark.queries):
            raise ValueError(f"{len(queries)} query rows for a benchmark of {len(self._benchmark.queries)} queries")
        depth = self.depth
        params = {"collections": self.collection, "sources": "gallery", "embedding_model": self._model,
                  "max_results": str(min(self.limit, len(self._indices_of)))}
        for number, query in enumerate(self._benchmark.queries):
            reply = self._client.call("POST", "/search", params=params, files=[image_key(query.image)[1]])
            ranking: list[int] = []
            for result in reply.get("results", []):
                indices = self._indices_of.get(str(result.get("id")))
                if indices is None:
                    raise GatewayError(f"the search returned {result.get('id')!r}, not an image of {self.collection}")
                ranking += indices
            if len(ranking) < depth:
                raise GatewayError(f"the search for query {number} ranked {len(ranking)} gallery images, "
                                   f"fewer than {depth}")
            yield number, np.asarray([ranking[:depth]], dtype=np.int64)

    def retriever(self) -> Callable[[np.ndarray], Retriever]:
        """For `evaluate(..., retriever=)`: ignores the gallery vectors (the gateway holds its own)."""
        def make(gallery_vectors: np.ndarray) -> Retriever:
            if len(gallery_vectors) != self.size:
                raise ValueError(f"{len(gallery_vectors)} gallery rows for a gallery of {self.size} images")
            return self
        return make


def _slug(name: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return kept[:32] or "benchmark"

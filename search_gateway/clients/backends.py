"""gRPC clients for the embed server and the scraper: one long-lived channel each.

This is the only module that speaks protobuf: requests are built here, and replies
become the gateway's own types (``replies.py``, ``search.types.Candidate``). gRPC
status codes become gateway errors here too, so the rest of the gateway never sees
``grpc``. Every call carries a deadline; retries are the channel's (``channels.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from types import MappingProxyType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from search_gateway.clients.channels import open_channel
from search_gateway.clients.replies import (
    Candidate,
    CrossAttention,
    Embeddings,
    ModelDescription,
    Patches,
    PatchMatches,
    Provenance,
)
from search_gateway.errors import BackendUnavailable, BadRequest
from service_common.grpc_security import PLAINTEXT, ClientSecurity
from service_common.tensors import to_numpy  # torch-free: numpy and generated code only
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc, scraper_pb2, scraper_pb2_grpc

log = logging.getLogger(__name__)

EMBED_SERVICE = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
SCRAPER_SERVICE = scraper_pb2.DESCRIPTOR.services_by_name["ScraperService"].full_name

PLATFORM_NAMES = {
    scraper_pb2.PLATFORM_PINTEREST: "pinterest",
    scraper_pb2.PLATFORM_REDDIT: "reddit",
    scraper_pb2.PLATFORM_INSTAGRAM: "instagram",
    scraper_pb2.PLATFORM_OTHER: "other",
}


class BackendRejected(BadRequest):
    """The backend refused the request's content (INVALID_ARGUMENT); its sentence is kept."""

    code = "rejected_by_backend"


def embed_health_name(model: str) -> str:
    """The health name under which an embed server reports one model
    (``embed_server.server.model_health_name``; not imported: it would import torch)."""
    return f"{EMBED_SERVICE}/{model}"


def embed_channel(target: str, *, retries: int, reconnect_backoff_max_ms: int, ready_model: str | None = None,
                  security: ClientSecurity = PLAINTEXT) -> grpc.aio.Channel:
    """With ``ready_model`` (the gateway's default model), calls go only to replicas
    where that model is SERVING: not one that is stopping, nor one restarted whose
    model is still loading. Without, to replicas SERVING as a whole."""
    health = EMBED_SERVICE if ready_model is None else embed_health_name(ready_model)
    return open_channel(target, services=[EMBED_SERVICE], retries=retries,
                        reconnect_backoff_max_ms=reconnect_backoff_max_ms, health_service=health, security=security)


def scraper_channel(target: str, *, retries: int, reconnect_backoff_max_ms: int,
                    security: ClientSecurity = PLAINTEXT) -> grpc.aio.Channel:
    return open_channel(target, services=[SCRAPER_SERVICE], retries=retries,
                        reconnect_backoff_max_ms=reconnect_backoff_max_ms, health_service=SCRAPER_SERVICE,
                        security=security)


def _translate(exc: grpc.aio.AioRpcError, backend: str) -> Exception:
    # gRPC's details name the backend's address and its connection error (and the
    # embed server's may quote a decoder's exception): they go to the log line that
    # errors.to_response writes with the request id, never into the reply.
    code = exc.code()
    detail = f"{backend} answered {code.name}: {exc.details() or '(no detail)'}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BackendRejected(f"The {backend} could not use the request's content (an image or text it cannot read).",
                               log_detail=detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendUnavailable(f"The {backend} is overloaded; try again shortly.", backend=backend, retry_after=1,
                                  log_detail=detail)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendUnavailable(f"The {backend} did not answer in time.", backend=backend, retry_after=2,
                                  log_detail=detail)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.FAILED_PRECONDITION):
        return BackendUnavailable(f"The {backend} is unavailable; try again shortly.", backend=backend, retry_after=2,
                                  log_detail=detail)
    return BackendUnavailable(f"The {backend} failed.", backend=backend, retry_after=5, log_detail=detail)


def _enum_name(enum: type, value: int, prefix: str) -> str:
    """``WEIGHTS_SOURCE_RANDOM`` -> ``random``; a value newer than this gateway -> ``unspecified``."""
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return "unspecified"
    return name.removeprefix(prefix).lower()


def _provenance(p: embed_pb2.Provenance) -> Provenance:
    return Provenance(model=p.model, weights=_enum_name(embed_pb2.WeightsSource, p.weights, "WEIGHTS_SOURCE_"),
                      runtime=p.runtime, device=p.device, precision=p.precision,
                      weights_fingerprint=p.weights_fingerprint)


def _model(m: embed_pb2.ModelInfo) -> ModelDescription:
    return ModelDescription(
        name=m.name, supports_text=m.supports_text, ready=m.state == embed_pb2.MODEL_STATE_READY,
        architecture=m.architecture, global_dim=m.global_dim, patch_dim=m.patch_dim, patch_size=m.patch_size,
        grid=(m.grid_height, m.grid_width), image_size=m.image_size,
        state=_enum_name(embed_pb2.ModelState, m.state, "MODEL_STATE_"),
        weights=_enum_name(embed_pb2.WeightsSource, m.weights, "WEIGHTS_SOURCE_"),
        runtime=m.runtime, device=m.device, precision=m.precision, error=m.error,
        weights_fingerprint=m.weights_fingerprint,
    )


def _patch_matches(query_grid: tuple[int, int], c: embed_pb2.CandidateAttention) -> PatchMatches:
    return PatchMatches(
        query_grid=query_grid, grid=(int(c.grid_height), int(c.grid_width)),
        overall_similarity=float(c.overall_similarity), global_similarity=float(c.global_similarity),
        top_indices=to_numpy(c.top_indices), top_scores=to_numpy(c.top_scores),
        max_similarity=to_numpy(c.max_similarity),
        similarity_matrix=to_numpy(c.similarity_matrix) if c.similarity_matrix.rows else None,
    )


def _candidate(c: scraper_pb2.Candidate) -> Candidate:
    return Candidate(url=c.image_url, source_url=c.source_url, platform=PLATFORM_NAMES.get(c.platform, "other"),
                     title=c.title, engine=c.engine,
                     headers=MappingProxyType({h.name: h.value for h in c.request_headers}))


class _Client:
    backend = "backend"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self._health = health_pb2_grpc.HealthStub(channel)

    def _timeout(self, timeout: float | None) -> float:
        """The call's deadline, in seconds from now: it covers every retry of the call."""
        limit = self.timeout_s if timeout is None else min(timeout, self.timeout_s)
        if limit <= 0:
            raise BackendUnavailable(f"No time was left to ask the {self.backend}.", backend=self.backend, retry_after=1)
        return limit

    def _unreadable(self, exc: ValueError) -> BackendUnavailable:
        return BackendUnavailable(f"The {self.backend} sent a reply the gateway cannot read.", backend=self.backend,
                                  log_detail=f"{self.backend} reply: {exc}")

    async def check_health(self, service: str = "", timeout: float = 2.0) -> bool:
        """True when the backend's standard health service says SERVING."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True  # reachable, just without the health service
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class EmbedClient(_Client):
    backend = "embed server"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        super().__init__(channel, timeout_s=timeout_s)
        # The generated grpc module has no type stubs (only the messages do).
        self._stub = embed_pb2_grpc.EmbedServiceStub(channel)  # type: ignore[no-untyped-call]
        # Called with (model, weights fingerprint) for every ready model a ListModels reply
        # lists: the embedding cache follows the weights served (cache.py).
        self.weights_listeners: list[Callable[[str, str], None]] = []

    async def embed(self, model: str, images: Sequence[bytes], *, timeout: float | None = None) -> Embeddings:
        request = embed_pb2.EmbedRequest(model=model, images=list(images))
        embeddings = await self._embeddings(self._stub.Embed(request, timeout=self._timeout(timeout)))
        if embeddings.vectors.shape[0] != len(images):
            raise BackendUnavailable("The embed server returned the wrong number of vectors.", backend=self.backend)
        return embeddings

    async def embed_text(self, model: str, texts: Sequence[str], *, timeout: float | None = None) -> Embeddings:
        request = embed_pb2.EmbedTextRequest(model=model, texts=list(texts))
        return await self._embeddings(self._stub.EmbedText(request, timeout=self._timeout(timeout)))

    async def _embeddings(self, call: Awaitable[embed_pb2.EmbedResponse]) -> Embeddings:
        """An Embed or EmbedText reply as our type; gRPC and decoding errors translated."""
        try:
            reply = await call
            vectors = to_numpy(reply.embeddings)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.backend) from None
        except ValueError as exc:
            raise self._unreadable(exc) from None
        return Embeddings(vectors, _provenance(reply.provenance))

    async def embed_patches(self, model: str, image: bytes, *, timeout: float | None = None) -> Patches:
        request = embed_pb2.EmbedPatchesRequest(model=model, image=image)
        try:
            reply = await self._stub.EmbedPatches(request, timeout=self._timeout(timeout))
            grid = (int(reply.grid_height), int(reply.grid_width))
            tokens = to_numpy(reply.patches)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.backend) from None
        except ValueError as exc:
            raise self._unreadable(exc) from None
        if tokens.ndim != 2 or tokens.shape[0] != grid[0] * grid[1] or tokens.shape[0] == 0:
            raise BackendUnavailable("The embed server returned patch tokens that do not fill its grid.",
                                     backend=self.backend, log_detail=f"grid {grid}, patches {tokens.shape}")
        return Patches(grid, tokens, _provenance(reply.provenance))

    async def cross_attention(
        self, model: str, query: bytes, candidates: Sequence[bytes], *, top_k: int = 1,
        include_similarity_matrix: bool = False, timeout: float | None = None,
    ) -> CrossAttention:
        request = embed_pb2.CrossAttentionRequest(
            model=model, query_image=query, candidate_images=list(candidates), top_k=top_k,
            include_similarity_matrix=include_similarity_matrix,
        )
        try:
            reply = await self._stub.CrossAttention(request, timeout=self._timeout(timeout))
            grid = (int(reply.query_grid_height), int(reply.query_grid_width))
            matches = tuple(_patch_matches(grid, c) for c in reply.candidates)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.backend) from None
        except ValueError as exc:
            raise self._unreadable(exc) from None
        if len(matches) != len(candidates):
            raise BackendUnavailable("The embed server compared the wrong number of candidates.", backend=self.backend)
        return CrossAttention(matches, _provenance(reply.provenance))

    async def list_models(self, *, timeout: float | None = 3.0) -> list[ModelDescription]:
        try:
            reply = await self._stub.ListModels(embed_pb2.ListModelsRequest(), timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.backend) from None
        models = [_model(m) for m in reply.models]
        for m in models:
            if m.ready and m.weights_fingerprint:
                for listener in self.weights_listeners:
                    listener(m.name, m.weights_fingerprint)
        return models


class ScraperClient(_Client):
    backend = "scraper"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        super().__init__(channel, timeout_s=timeout_s)
        self._stub = scraper_pb2_grpc.ScraperServiceStub(channel)  # type: ignore[no-untyped-call]

    async def search(self, query: str, max_results: int, *, timeout: float | None = None) -> AsyncGenerator[Candidate, None]:
        """Stream candidates. The channel retries a failure before the first one (the
        call is not committed yet); a later failure ends the stream with an error."""
        call = self._stub.Search(scraper_pb2.SearchRequest(query=query, max_results=max_results),
                                 timeout=self._timeout(timeout))
        try:
            async for reply in call:
                yield _candidate(reply)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.backend) from None
        finally:
            call.cancel()

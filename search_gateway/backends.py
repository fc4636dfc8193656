"""gRPC clients for the embed server and the scraper: one long-lived channel each.

Every call carries a deadline. gRPC status codes become gateway errors here, at the
client edge, so the rest of the gateway never sees ``grpc``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_common.tensors import to_numpy  # torch-free: numpy and generated code only
from search_gateway.errors import BackendUnavailable, BadRequest
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc, scraper_pb2, scraper_pb2_grpc

log = logging.getLogger(__name__)

_MB = 1024 * 1024
# Codes after which the same idempotent call may succeed on another replica (the
# round-robin picker moves on) or a moment later: a replica died mid-call
# (UNAVAILABLE, or CANCELLED by its shutdown), or its queue was full.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED})


class BackendRejected(BadRequest):
    """The backend refused the request's content (INVALID_ARGUMENT); its sentence is kept."""

    code = "rejected_by_backend"


def open_channel(target: str, *, reconnect_backoff_max_ms: int) -> grpc.aio.Channel:
    """One channel per backend for the gateway's lifetime, balanced round robin."""
    options = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_send_message_length", 64 * _MB),
        ("grpc.max_receive_message_length", 64 * _MB),
        # Find a restarted backend within seconds (gRPC's default back-off grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", min(200, reconnect_backoff_max_ms)),
        ("grpc.min_reconnect_backoff_ms", min(200, reconnect_backoff_max_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_backoff_max_ms),
        # Notice a silently vanished peer (no FIN, e.g. a killed container host).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    return grpc.aio.insecure_channel(target, options=options)


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


@dataclass(frozen=True)
class ModelDescription:
    name: str
    supports_text: bool
    ready: bool
    info: embed_pb2.ModelInfo


class _Client:
    backend = "backend"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, retries: int) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self.retries = retries
        self._health = health_pb2_grpc.HealthStub(channel)

    def _deadline(self, timeout: float | None) -> float:
        limit = self.timeout_s if timeout is None else min(timeout, self.timeout_s)
        if limit <= 0:
            raise BackendUnavailable(f"No time was left to ask the {self.backend}.", backend=self.backend, retry_after=1)
        return time.monotonic() + limit

    async def _unary(self, method, request, timeout: float | None):  # type: ignore[no-untyped-def]
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise BackendUnavailable(f"The {self.backend} did not answer in time.", backend=self.backend)
                return await method(request, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                retry_in = 0.05 * (2**attempt) * (0.5 + random.random())
                if exc.code() in _RETRYABLE and attempt < self.retries and deadline - time.monotonic() > retry_in:
                    attempt += 1
                    await asyncio.sleep(retry_in)
                    continue
                raise _translate(exc, self.backend) from None

    async def check_health(self, service: str = "", timeout: float = 2.0) -> bool:
        """True when the backend's standard health service says SERVING."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True  # reachable, just without the health service
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class EmbedClient(_Client):
    backend = "embed server"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, retries: int) -> None:
        super().__init__(channel, timeout_s=timeout_s, retries=retries)
        self._stub = embed_pb2_grpc.EmbedServiceStub(channel)

    async def embed(self, model: str, images: Sequence[bytes], *, timeout: float | None = None) -> np.ndarray:
        reply = await self._unary(self._stub.Embed, embed_pb2.EmbedRequest(model=model, images=list(images)), timeout)
        vectors = to_numpy(reply.embeddings)
        if vectors.shape[0] != len(images):
            raise BackendUnavailable("The embed server returned the wrong number of vectors.", backend=self.backend)
        return vectors

    async def embed_text(self, model: str, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        reply = await self._unary(self._stub.EmbedText, embed_pb2.EmbedTextRequest(model=model, texts=list(texts)), timeout)
        return to_numpy(reply.embeddings)

    async def cross_attention(
        self, model: str, query: bytes, candidates: Sequence[bytes], *, top_k: int = 1,
        include_similarity_matrix: bool = False, timeout: float | None = None,
    ) -> embed_pb2.CrossAttentionResponse:
        request = embed_pb2.CrossAttentionRequest(
            model=model, query_image=query, candidate_images=list(candidates), top_k=top_k,
            include_similarity_matrix=include_similarity_matrix,
        )
        return await self._unary(self._stub.CrossAttention, request, timeout)

    async def list_models(self, *, timeout: float | None = 3.0) -> list[ModelDescription]:
        reply = await self._unary(self._stub.ListModels, embed_pb2.ListModelsRequest(), timeout)
        return [
            ModelDescription(m.name, m.supports_text, m.state == embed_pb2.MODEL_STATE_READY, m)
            for m in reply.models
        ]


class ScraperClient(_Client):
    backend = "scraper"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, retries: int) -> None:
        super().__init__(channel, timeout_s=timeout_s, retries=retries)
        self._stub = scraper_pb2_grpc.ScraperServiceStub(channel)

    async def search(self, query: str, max_results: int, *, timeout: float | None = None) -> AsyncIterator[scraper_pb2.Candidate]:
        """Stream candidates. A failure before the first one is retried; later, it ends the stream with an error."""
        deadline = self._deadline(timeout)
        attempt = 0
        while True:
            received = 0
            call = self._stub.Search(
                scraper_pb2.SearchRequest(query=query, max_results=max_results),
                timeout=max(0.001, deadline - time.monotonic()),
            )
            try:
                async for candidate in call:
                    received += 1
                    yield candidate
                return
            except grpc.aio.AioRpcError as exc:
                if received == 0 and exc.code() in _RETRYABLE and attempt < self.retries and deadline - time.monotonic() > 0.2:
                    attempt += 1
                    await asyncio.sleep(0.05 * (2**attempt))
                    continue
                raise _translate(exc, self.backend) from None
            finally:
                call.cancel()

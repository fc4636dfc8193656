"""The gRPC edge: requests in, core calls, responses out, and every error turned into
one gRPC status with a sentence a person understands."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np

from embed_server import attention
from embed_server.config import EmbedSettings
from embed_server.errors import InvalidInput, ModelFailed, ModelUnavailable, Overloaded
from embed_server.images import ImageDecodeError, decode_image
from embed_server.model_pool import ImageOutput, LoadedModel, ModelPool, ModelState, ServedModel
from embed_server.models.cards import ModelCard
from embed_server.runtimes.factory import resolve_runtime
from service_common.tensors import float_matrix, index_matrix
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

_WEIGHTS = {"pretrained": embed_pb2.WEIGHTS_SOURCE_PRETRAINED, "random": embed_pb2.WEIGHTS_SOURCE_RANDOM}
_STATES = {
    ModelState.NOT_LOADED: embed_pb2.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: embed_pb2.MODEL_STATE_LOADING,
    ModelState.READY: embed_pb2.MODEL_STATE_READY,
    ModelState.FAILED: embed_pb2.MODEL_STATE_FAILED,
}
MAX_TOP_K = 64


def _status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, ModelFailed):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ModelUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); the server log has details"


def _rpc(
    method: Callable[[Any, RequestT, grpc.aio.ServicerContext], Awaitable[ResponseT]],
) -> Callable[[Any, RequestT, grpc.aio.ServicerContext], Awaitable[ResponseT]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: RequestT, context: grpc.aio.ServicerContext) -> ResponseT:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = _status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    return wrapper


class EmbedServicer(embed_pb2_grpc.EmbedServiceServicer):
    def __init__(self, pool: ModelPool, settings: EmbedSettings, decode_pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.settings = settings
        self.decode_pool = decode_pool
        # Images whose decoding began, per model: shows that refused requests decode nothing.
        self.images_decoded: Counter[str] = Counter()
        self._decoded_lock = threading.Lock()  # incremented on the decode threads

    @_rpc
    async def Embed(self, request: embed_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> embed_pb2.EmbedResponse:
        model = self.pool.get(request.model)
        self._check_image_count(len(request.images))
        loaded = await model.ready()
        outputs = await self._forward(model.card, loaded, request.images)
        return embed_pb2.EmbedResponse(
            provenance=_provenance(model, loaded),
            embeddings=float_matrix(np.stack([o.global_vector for o in outputs])),
        )

    @_rpc
    async def EmbedText(
        self, request: embed_pb2.EmbedTextRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.EmbedResponse:
        model = self.pool.get_with_text(request.model)
        texts = list(request.texts)
        if not texts:
            raise InvalidInput("send at least one text")
        if len(texts) > self.settings.max_texts_per_request:
            raise InvalidInput(f"too many texts: {len(texts)} (limit {self.settings.max_texts_per_request})")
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"text {index} is empty")
            if len(text) > self.settings.max_text_chars:
                raise InvalidInput(f"text {index} has {len(text)} characters (limit {self.settings.max_text_chars})")
        loaded = await model.ready()
        assert loaded.texts is not None and loaded.description.tokenizer is not None
        tokens = await asyncio.get_running_loop().run_in_executor(self.decode_pool, loaded.description.tokenizer, texts)
        vectors = await loaded.texts.submit(list(tokens))
        return embed_pb2.EmbedResponse(provenance=_provenance(model, loaded), embeddings=float_matrix(np.stack(vectors)))

    @_rpc
    async def EmbedPatches(
        self, request: embed_pb2.EmbedPatchesRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.EmbedPatchesResponse:
        model = self.pool.get(request.model)
        loaded = await model.ready()
        (output,) = await self._forward(model.card, loaded, [request.image])
        grid_h, grid_w = model.card.grid
        return embed_pb2.EmbedPatchesResponse(
            provenance=_provenance(model, loaded),
            grid_height=grid_h,
            grid_width=grid_w,
            patches=float_matrix(output.patches),
        )

    @_rpc
    async def CrossAttention(
        self, request: embed_pb2.CrossAttentionRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.CrossAttentionResponse:
        model = self.pool.get(request.model)
        if not request.candidate_images:
            raise InvalidInput("send at least one candidate image")
        self._check_image_count(1 + len(request.candidate_images))
        top_k = request.top_k or 1
        if top_k > MAX_TOP_K:
            raise InvalidInput(f"top_k {top_k} is over the limit of {MAX_TOP_K}")
        temperature = request.temperature or attention.DEFAULT_TEMPERATURE
        if not attention.MIN_TEMPERATURE <= temperature <= attention.MAX_TEMPERATURE:  # NaN fails too
            raise InvalidInput(
                f"temperature {temperature:g} is outside the allowed range {attention.MIN_TEMPERATURE:g} to "
                f"{attention.MAX_TEMPERATURE:g} (0 means the default, {attention.DEFAULT_TEMPERATURE:g})"
            )
        loaded = await model.ready()
        # The query and every candidate go through the model once, in one submission.
        query, *candidates = await self._forward(
            model.card, loaded, [request.query_image, *request.candidate_images]
        )
        grid = model.card.grid

        def compute() -> list[attention.Correspondence]:
            return [
                attention.correspond(
                    query.patches,
                    candidate.patches,
                    query.global_vector,
                    candidate.global_vector,
                    grid,
                    top_k=top_k,
                    include_similarity=request.include_similarity_matrix,
                    include_attention=request.include_attention,
                    temperature=temperature,
                )
                for candidate in candidates
            ]

        results = await asyncio.get_running_loop().run_in_executor(self.decode_pool, compute)
        return embed_pb2.CrossAttentionResponse(
            provenance=_provenance(model, loaded),
            query_grid_height=grid[0],
            query_grid_width=grid[1],
            candidates=[_candidate_message(result, grid) for result in results],
        )

    @_rpc
    async def ListModels(
        self, request: embed_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> embed_pb2.ListModelsResponse:
        infos = []
        for model in self.pool.models.values():
            info = _model_info(model, self.settings)
            _add_load_and_admission(info, model, self.images_decoded[model.card.name])
            infos.append(info)
        return embed_pb2.ListModelsResponse(models=infos)

    def _check_image_count(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("send at least one image")
        if count > self.settings.max_images_per_request:
            raise InvalidInput(f"too many images: {count} (limit {self.settings.max_images_per_request} per request)")

    async def _forward(self, card: ModelCard, loaded: LoadedModel, images: Sequence[bytes]) -> list[ImageOutput]:
        loop = asyncio.get_running_loop()
        max_pixels = self.settings.max_image_pixels

        def prepare(index: int, data: bytes) -> np.ndarray:
            with self._decoded_lock:
                self.images_decoded[card.name] += 1
            try:
                picture = decode_image(data, max_pixels, draft_size=card.preprocess.draft_size)
            except ImageDecodeError as exc:
                raise InvalidInput(f"image {index} is not usable: {exc}") from None
            return card.preprocess(picture)

        # Admission before decoding: a request the queue has no room for is refused
        # without decoding anything, and the room stays reserved while it decodes (and
        # is returned if it fails or is cancelled), so decoded images in memory never
        # exceed the queue's size (batching.py).
        with loaded.images.reserve(len(images)) as reservation:
            jobs = [loop.run_in_executor(self.decode_pool, prepare, index, data) for index, data in enumerate(images)]
            try:
                pixels = await asyncio.gather(*jobs)
            except BaseException:
                # One image failed or the call was cancelled: drop the decodes that have
                # not started (a running one finishes on its thread; decode_workers bound those).
                for job in jobs:
                    job.cancel()
                raise
            return await loaded.images.submit(pixels, reservation)


def _provenance(model: ServedModel, loaded: LoadedModel) -> embed_pb2.Provenance:
    runtime = loaded.runtime
    return embed_pb2.Provenance(
        model=model.card.name,
        weights=_WEIGHTS[loaded.description.weights],
        runtime=runtime.name,
        device=runtime.device,
        precision=runtime.precision,
        weights_fingerprint=loaded.description.fingerprint,
    )


def _candidate_message(result: attention.Correspondence, grid: tuple[int, int]) -> embed_pb2.CandidateAttention:
    message = embed_pb2.CandidateAttention(
        grid_height=grid[0],
        grid_width=grid[1],
        overall_similarity=result.overall_similarity,
        global_similarity=result.global_similarity,
        top_indices=index_matrix(result.top_indices),
        top_scores=float_matrix(result.top_scores),
        max_similarity=float_matrix(result.max_similarity),
    )
    if result.similarity is not None:
        message.similarity_matrix.CopyFrom(float_matrix(result.similarity))
    if result.attention is not None:
        message.attention.CopyFrom(float_matrix(result.attention))
    return message


def _model_info(model: ServedModel, settings: EmbedSettings) -> embed_pb2.ModelInfo:
    card = model.card
    grid_h, grid_w = card.grid
    info = embed_pb2.ModelInfo(
        name=card.name,
        architecture=card.architecture,
        patch_size=card.patch_size,
        grid_height=grid_h,
        grid_width=grid_w,
        image_size=card.preprocess.image_size,
        supports_text=card.supports_text,
        weights=_WEIGHTS[model.weights],
        weights_source=(card.weights_source or card.pretrained_id) if model.weights == "pretrained" else "",
        weights_licence=card.weights_licence if model.weights == "pretrained" else "",
        state=_STATES[model.state],
        error=model.error,
        runtime=resolve_runtime(settings),
        device=settings.device,
        precision=settings.precision,
    )
    loaded = model.loaded
    if loaded is None:
        if settings.architecture == "full":
            info.global_dim, info.patch_dim = card.global_dim, card.patch_dim
        return info
    info.global_dim, info.patch_dim = loaded.description.global_dim, loaded.description.patch_dim
    info.providers.extend(loaded.runtime.providers)
    info.exports_from_cache = bool(getattr(loaded.runtime, "exports_from_cache", False))
    info.weights_fingerprint = loaded.description.fingerprint
    info.runtime_fallback = loaded.runtime.fallback
    info.runtime, info.device, info.precision = loaded.runtime.name, loaded.runtime.device, loaded.runtime.precision
    for batcher, field in ((loaded.images, info.image_batches), (loaded.texts, info.text_batches)):
        if batcher is not None:
            counters = batcher.counters
            field.batches = counters.batches
            field.items = counters.items
            field.largest_batch = counters.largest_batch
            field.rejected = counters.rejected
            field.queued = batcher.queued
    return info


def _add_load_and_admission(info: embed_pb2.ModelInfo, model: ServedModel, images_decoded: int) -> None:
    """The fields of ModelInfo about load retries and request admission."""
    info.images_decoded = images_decoded
    info.load_attempts = model.load_attempts
    if model.state is ModelState.FAILED and model.next_retry_at is not None:
        info.next_retry_unix_seconds = model.next_retry_at
    loaded = model.loaded
    if loaded is not None:
        info.image_batches.reserved = loaded.images.reserved
        if loaded.texts is not None:
            info.text_batches.reserved = loaded.texts.reserved

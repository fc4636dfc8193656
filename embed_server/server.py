"""Building the gRPC server: servicer, health, reflection, model warm-up.

Health (grpc.health.v1) reports the whole server under "" and the EmbedService name,
and each model under `tattoo_search.v1.EmbedService/<model>` (model_health_name), so a
balancer or the gateway can route one model's requests away from a replica that lacks
it while the replica serves the others:

- per model: SERVING once the model is READY; with EMBED_PRELOAD=false also while it
  is not loaded yet (it loads on first use), and NOT_SERVING while it is FAILED.
- overall: with preloading, SERVING once every configured model is READY (a model
  that loads on a later background retry turns it SERVING then); without, SERVING
  from the start, as models load on first use.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from embed_server.config import EmbedSettings
from embed_server.model_pool import ModelPool, ModelState, ServedModel
from embed_server.service import EmbedServicer
from service_common.grpc_requests import RequestDecodingInterceptor
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name


def model_health_name(model: str) -> str:
    """The health service name of one model: `tattoo_search.v1.EmbedService/clip`."""
    return f"{SERVICE_NAME}/{model}"


class EmbedServer:
    """A started server; `stop()` also releases the models and their threads."""

    def __init__(self, grpc_server: grpc.aio.Server, pool: ModelPool, decode_pool: ThreadPoolExecutor) -> None:
        self.grpc_server = grpc_server
        self.pool = pool
        self._decode_pool = decode_pool
        self._warm_up: asyncio.Task[None] | None = None

    async def stop(self, grace: float | None = None) -> None:
        if self._warm_up is not None:
            self._warm_up.cancel()
        await self.grpc_server.stop(grace)
        await self.pool.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def create_server(settings: EmbedSettings) -> tuple[EmbedServer, int]:
    """Bind, start and begin warming the models. Returns the server and its port
    (useful with EMBED_PORT=0)."""
    pool = ModelPool(settings)
    decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
    grpc_server = grpc.aio.server(
        interceptors=[RequestDecodingInterceptor()],  # undecodable bytes: INVALID_ARGUMENT
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ]
    )
    embed_pb2_grpc.add_EmbedServiceServicer_to_server(EmbedServicer(pool, settings, decode_pool), grpc_server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, grpc_server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        grpc_server,
    )
    port = grpc_server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    for name in ("", SERVICE_NAME, *map(model_health_name, pool.models)):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def on_model_change(model: ServedModel) -> None:
        await _update_health(pool, health, settings.preload)

    for model in pool.models.values():
        model.listener = on_model_change
    await grpc_server.start()
    server = EmbedServer(grpc_server, pool, decode_pool)
    server._warm_up = asyncio.get_running_loop().create_task(_warm_up(pool, health, settings.preload))
    return server, port


async def _warm_up(pool: ModelPool, health: health_aio.HealthServicer, preload: bool) -> None:
    if preload and not await pool.preload():
        failed = [name for name, model in pool.models.items() if model.state is ModelState.FAILED]
        log.error("not serving yet: models failed to load (retrying in the background): %s", ", ".join(failed))
    await _update_health(pool, health, preload)
    if all(model.state is ModelState.READY for model in pool.models.values()) or not preload:
        log.info("serving %s", ", ".join(pool.models))


async def _update_health(pool: ModelPool, health: health_aio.HealthServicer, preload: bool) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    for name, model in pool.models.items():
        usable = model.state is ModelState.READY or (not preload and model.state is not ModelState.FAILED)
        await health.set(model_health_name(name), serving if usable else not_serving)
    everything = not preload or all(model.state is ModelState.READY for model in pool.models.values())
    for name in ("", SERVICE_NAME):
        await health.set(name, serving if everything else not_serving)

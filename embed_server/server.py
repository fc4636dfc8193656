"""Building the gRPC server the way both services do (service_common/grpc_server.py),
with this service's part: the servicer, the models' health, their warm-up.

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

from embed_server.config import EmbedSettings
from embed_server.metrics import NAMESPACE as METRICS_NAMESPACE
from embed_server.metrics import EmbedMetrics
from embed_server.model_pool import ModelPool, ModelState, ServedModel
from embed_server.service import EmbedServicer
from service_common.grpc_server import GrpcServer, Service
from service_common.grpc_server import create_server as create_grpc_server
from service_common.metrics_http import MetricsExport
from tattoo_search.v1 import embed_pb2, embed_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
# Replies of patch grids or many vectors can pass gRPC's 4 MiB default.
MAX_REPLY_BYTES = 256 * 1024 * 1024


def model_health_name(model: str) -> str:
    """The health service name of one model: `tattoo_search.v1.EmbedService/clip`."""
    return f"{SERVICE_NAME}/{model}"


async def create_server(settings: EmbedSettings) -> tuple[GrpcServer, int]:
    """Bind, start and begin warming the models. Returns the server and its port
    (useful with EMBED_PORT=0); stopping it also releases the models and their threads."""
    metrics = EmbedMetrics()
    pool = ModelPool(settings, metrics.batch_observer)
    metrics.watch(pool)
    decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
    warm_up: asyncio.Task[None] | None = None

    async def release() -> None:
        if warm_up is not None:
            warm_up.cancel()
        await pool.close()
        decode_pool.shutdown(wait=False, cancel_futures=True)

    servicer = EmbedServicer(pool, settings, decode_pool)
    try:
        server, port = await create_grpc_server(
            [Service(SERVICE_NAME, servicer, embed_pb2_grpc.add_EmbedServiceServicer_to_server)],
            host=settings.host,
            port=settings.port,
            env_prefix="EMBED_",
            serving=False,  # until the models are warm (see _update_health)
            health_names=map(model_health_name, pool.models),
            max_receive_bytes=settings.max_request_bytes,
            max_send_bytes=MAX_REPLY_BYTES,
            max_connection_age_s=settings.max_connection_age_s,
            interceptors=settings.security.interceptors(),
            credentials=settings.security.credentials(),  # raises SecurityConfigError naming the file
            on_stop=release,
            metrics=MetricsExport(metrics.registry, METRICS_NAMESPACE, settings.metrics_port)
            if settings.metrics_port
            else None,
        )
    except BaseException:
        await release()
        raise

    async def on_model_change(model: ServedModel) -> None:
        await _update_health(pool, server, settings.preload)

    for model in pool.models.values():
        model.listener = on_model_change
    warm_up = asyncio.get_running_loop().create_task(_warm_up(pool, server, settings.preload))
    return server, port


async def _warm_up(pool: ModelPool, server: GrpcServer, preload: bool) -> None:
    if preload and not await pool.preload():
        failed = [name for name, model in pool.models.items() if model.state is ModelState.FAILED]
        log.error("not serving yet: models failed to load (retrying in the background): %s", ", ".join(failed))
    await _update_health(pool, server, preload)
    if all(model.state is ModelState.READY for model in pool.models.values()) or not preload:
        log.info("serving %s", ", ".join(pool.models))


async def _update_health(pool: ModelPool, server: GrpcServer, preload: bool) -> None:
    for name, model in pool.models.items():
        usable = model.state is ModelState.READY or (not preload and model.state is not ModelState.FAILED)
        await server.set_serving(model_health_name(name), usable)
    everything = not preload or all(model.state is ModelState.READY for model in pool.models.values())
    for name in ("", SERVICE_NAME):
        await server.set_serving(name, everything)

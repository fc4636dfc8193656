"""The gateway's gRPC channels and the one retry policy every one of them carries.

Retries are gRPC's own (gRFC A6), declared in the channel's service config, not
hand-written around each call:
- Every attempt goes through the channel's load balancer again. With the
  ``round_robin`` policy set here, a call that failed on one embed server replica is
  retried on the next one; that needs a target that resolves to every replica
  (``dns:///embed-server:50051`` as in compose.yaml, or ``ipv4:a:port,b:port``);
  a target naming one address retries on that replica only.
- The call's deadline covers all of its attempts, so a retry never outlives the
  search budget that set the deadline.
- A server stream is retried only until the server has answered anything: once the
  scraper has streamed a candidate, the call is committed and a failure ends it (the
  candidates already received are still used). A6 calls this "committed".
- Which codes are retried: see ``RETRYABLE_CODES``.

Client-side health checking (gRFC A17, ``healthCheckConfig``): the channel watches
each replica's ``grpc.health.v1`` status and the balancer picks only replicas that
say SERVING. A replica stopping on SIGTERM turns NOT_SERVING at once and gets no new
calls from then on (rather than refusing them, which costs a retry); a restarted one
gets calls once it says SERVING, i.e. once its models are warm, not as soon as it
listens (a call there would wait for the load). A server without the health service
counts as healthy. The names watched are the ones the services report: the embed
server's per-model name for the gateway's default model (``backends.embed_channel``),
the scraper's service name.

Retry throttling (A6's ``retryThrottling`` token bucket) is left out on purpose: it
is one bucket per channel, so losing one replica with a few batches in flight would
spend it and turn the next retries, the ones that would reach the healthy replica,
into failed batches. The deadline already bounds what retries cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from service_common.grpc_security import PLAINTEXT, ClientSecurity, aio_channel
from service_common.keepalive import KEEPALIVE, Keepalive

_MB = 1024 * 1024
# The largest message either way: Embed batches of full-size images.
MAX_MESSAGE_BYTES = 64 * _MB
# gRPC caps maxAttempts at 5 (A6) and refuses a policy with fewer than 2.
MAX_ATTEMPTS_CAP = 5

# Codes that say the call did not run, or may run if tried again, here or elsewhere:
# - UNAVAILABLE: no replica reachable, or the one picked went away mid-call;
# - CANCELLED as a status the server sent: a handler cancelled on the replica's side,
#   e.g. while it shuts down (a replica stopped outright answers UNAVAILABLE). Kept
#   from the hand-written loop this replaced; a call the gateway cancels itself is
#   over and never retried;
# - RESOURCE_EXHAUSTED: an embed server's batching queue is full. It refuses at
#   admission, before decoding any image, so nothing ran; another replica, or the
#   same one after the back-off, may have room. (gRPC's client also reports a reply
#   over MAX_MESSAGE_BYTES with this code; that one is not retried, because the reply's
#   headers have arrived by then and the call is committed.)
# Every method behind these codes is idempotent (embeddings, patch attention, a
# candidate search), so running one twice is harmless.
RETRYABLE_CODES: tuple[str, ...] = ("UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED")
# Back-off before attempt n is random in [0, min(initial * multiplier**(n-1), max)]:
# 0-100 ms, then 0-200 ms, ... A restarted replica is found by the channel's
# reconnect back-off (open_channel), not by waiting here.
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0
BACKOFF_MULTIPLIER = 2.0


def max_attempts(retries: int) -> int:
    """``GATEWAY_RPC_RETRIES`` retries after the first attempt, within gRPC's cap."""
    return min(1 + max(0, retries), MAX_ATTEMPTS_CAP)


def service_config(services: Sequence[str], *, retries: int, health_service: str | None = None) -> str:
    """The JSON for the ``grpc.service_config`` channel option: a retry policy for
    every method of ``services`` (full names, e.g. ``tattoo_search.v1.EmbedService``).
    The standard health service is not named: a readiness probe wants the answer
    now, not after back-offs. With ``health_service``, a replica is picked only while
    its health status under that name is SERVING."""
    config: dict[str, object] = {}
    if health_service is not None:
        config["healthCheckConfig"] = {"serviceName": health_service}
    attempts = max_attempts(retries)
    if attempts >= 2:  # a policy of one attempt is invalid; no policy means no retries
        config["methodConfig"] = [{
            "name": [{"service": name} for name in services],
            "retryPolicy": {
                "maxAttempts": attempts,
                "initialBackoff": f"{INITIAL_BACKOFF_S}s",
                "maxBackoff": f"{MAX_BACKOFF_S}s",
                "backoffMultiplier": BACKOFF_MULTIPLIER,
                "retryableStatusCodes": list(RETRYABLE_CODES),
            },
        }]
    return json.dumps(config)


def open_channel(target: str, *, services: Sequence[str], retries: int, reconnect_backoff_max_ms: int,
                 health_service: str | None = None, security: ClientSecurity = PLAINTEXT,
                 keepalive: Keepalive = KEEPALIVE) -> grpc.aio.Channel:
    """One channel per backend for the gateway's lifetime, balanced round robin over the
    replicas that are SERVING under ``health_service``, with the retry policy above for
    ``services``, TLS and a token as ``security`` says, and ``keepalive``'s pings, which
    the servers accept as they are built from the same ``Keepalive`` (only tests pass another)."""
    options: list[tuple[str, str | int]] = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config", service_config(services, retries=retries, health_service=health_service)),
        # Ours, not one a DNS TXT record could substitute.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        # A request is replayed from a buffer kept until the call commits; past this
        # size gRPC commits at once and does not retry (the default is 256 KiB, less
        # than one Embed batch of a few images).
        ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Find a restarted backend within seconds (gRPC's default back-off grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", min(200, reconnect_backoff_max_ms)),
        ("grpc.min_reconnect_backoff_ms", min(200, reconnect_backoff_max_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_backoff_max_ms),
        # Notice a silently vanished peer (no FIN, e.g. a killed container host), with
        # pings the servers allow (service_common/keepalive.py says why each option).
        *keepalive.client_options(),
    ]
    return aio_channel(target, security, options)

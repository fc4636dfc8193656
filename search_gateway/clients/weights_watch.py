"""Notice an embed server restart before its first reply, for the embedding cache.

A restarted embed server may serve other weights (another seed, pretrained in place of
random): the cache's vectors of the old weights are then of another space. The cache
learns the new weights from the first reply that names them, but a search's first
lookup, its query image's vector, comes before any reply. The gateway's channel,
though, sees the restart: it leaves READY when the old server goes (its connection
closes, or its health says NOT_SERVING) and turns READY again once it is connected
to the new one. Both edges make the cache forget which weights each model has
(``EmbeddingCache.unverify``): lookups miss until a reply names the weights again.
The second edge matters as the old server's last replies, drained after it stopped
taking calls, may land after the first edge and name the old weights once more.

Not seen here (cache.py says what covers it, and what is left): several replicas
behind one channel, where one restarting leaves the channel READY, or a proxy that
keeps the gateway's connection and answers health itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc

log = logging.getLogger(__name__)

READY = grpc.ChannelConnectivity.READY


class Forgetful(Protocol):
    """What is told of a reconnect: the embedding cache (search/cache.py ``EmbeddingCache``),
    named by what it does so that the clients never import the search."""

    def unverify(self) -> None: ...


async def unverify_on_reconnect(channel: grpc.aio.Channel, cache: Forgetful) -> None:
    """Runs until ``channel`` is closed."""
    try:
        state = channel.get_state()
        while True:
            await channel.wait_for_state_change(state)
            new = channel.get_state()
            # READY to READY is a change too: it left READY and came back before this
            # task saw it (a busy event loop), so its connection may be to another server.
            if READY in (state, new):
                log.info("embed server connection %s: cached vectors wait for the weights of its next reply",
                         "back" if new == READY else "lost")
                cache.unverify()
            state = new
    except grpc.aio.UsageError:  # the channel was closed: the gateway is stopping
        return

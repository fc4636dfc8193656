"""Stage 5 (when asked): patch attention for the top results, in one CrossAttention call."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from search_gateway.clients.backends import EmbedClient
from search_gateway.errors import BackendUnavailable, GatewayError
from search_gateway.search.budget import Deadline
from search_gateway.search.download import CandidateDownloads
from search_gateway.search.types import RankedResult

log = logging.getLogger(__name__)


async def attach_attention(
    results: list[RankedResult], *, embed: EmbedClient, downloads: CandidateDownloads, model: str,
    query_image: bytes, kept_bytes: Callable[[str], bytes | None], deadline: Deadline,
) -> tuple[list[RankedResult], str | None]:
    """``results`` with attention on each of them, or unchanged and a sentence saying
    why attention could not be computed."""
    try:
        images = []
        for result in results:
            data = kept_bytes(result.sha256)
            if data is None:  # ranked from the cache: fetch it again
                data = await downloads.refetch(result.candidate, deadline)
            images.append(data)
        reply = await embed.cross_attention(model, query_image, images, top_k=1, timeout=deadline.timeout(0.05))
    except GatewayError as exc:
        # The reply says what failed in plain words (a download's message names its
        # URL); the detail goes to the log.
        log.warning("patch attention failed: %s", exc.log_detail or exc)
        return results, (exc.message if isinstance(exc, BackendUnavailable)
                         else "Patch attention could not be computed for the top results.")
    return [dataclasses.replace(r, attention=m) for r, m in zip(results, reply.candidates, strict=True)], None

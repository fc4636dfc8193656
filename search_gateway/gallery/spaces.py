"""Names every room shares about where points live: the public ``web`` collection, the
point id a web result has there, and the vector space of an embed reply.

Here, below the search and the collections, so that uploads and reindexing (collections/)
and the search (search/) name spaces and web ids alike without importing each other.
"""

from __future__ import annotations

from search_gateway.clients.replies import Provenance
from search_gateway.gallery.base import VectorSpace, point_id

# The collection of images found on the public web: no tenant, and no private
# collection may take its name.
WEB = "web"


def result_id(sha256: str) -> str:
    return point_id(WEB, sha256)


def space_of(model: str, provenance: Provenance | None, dimension: int) -> VectorSpace | None:
    """Where vectors from this reply live; None when the embed server did not say which weights."""
    if provenance is None or not provenance.weights_fingerprint:
        return None
    return VectorSpace(model, provenance.weights_fingerprint, dimension)

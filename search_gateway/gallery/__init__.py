"""The gallery: a vector store of every image the product has embedded.

``base`` defines the narrow store interface, ``edge`` (embedded, default) and
``qdrant`` (a Qdrant server or cluster) implement it, ``factory.open_store`` picks
one, and ``gallery.Gallery`` holds the operations the search pipeline uses.
"""

from search_gateway.gallery.base import (
    GalleryCorrupt,
    GalleryError,
    GalleryFilter,
    GalleryHit,
    GalleryPage,
    GalleryPoint,
    GalleryStore,
    GalleryUnavailable,
    VectorSpace,
    point_id,
)
from search_gateway.gallery.factory import open_store
from search_gateway.gallery.gallery import Gallery

__all__ = [
    "Gallery",
    "GalleryCorrupt",
    "GalleryError",
    "GalleryFilter",
    "GalleryHit",
    "GalleryPage",
    "GalleryPoint",
    "GalleryStore",
    "GalleryUnavailable",
    "VectorSpace",
    "open_store",
    "point_id",
]

"""Machine style, subject and body placement tags for gallery points, scored once when they are stored.

The scoring is the offline captioner's (``caption.Vocabulary`` and ``machine_tags``):
the point's image vector against the text tower's prompt vectors of the same model,
so only models with a text tower (clip, siglip) get tags. It runs in the gallery's
background writer, never in a search.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np

from search_gateway.clients.backends import EmbedClient
from search_gateway.gallery.base import GalleryPoint, VectorSpace
from search_gateway.search.caption import Vocabulary, machine_tags, placement_tags


class Tagger:
    def __init__(self, embed: EmbedClient, text_models: Collection[str], *, timeout_s: float,
                 shared: Mapping[str, Vocabulary] | None = None) -> None:
        self._embed = embed
        self._text_models = frozenset(text_models)
        self._timeout_s = timeout_s
        # The captioner's vocabulary for its model is reused: one EmbedText per weights.
        self._vocabularies: dict[str, Vocabulary] = dict(shared or {})

    async def __call__(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> Sequence[GalleryPoint]:
        if space.model not in self._text_models:
            return points
        vocabulary = self._vocabularies.get(space.model)
        if vocabulary is None:
            vocabulary = self._vocabularies[space.model] = Vocabulary(self._embed, space.model)
        styles, subjects = await vocabulary.vectors(self._timeout_s, fingerprint=space.weights_fingerprint)
        places = await vocabulary.placements(self._timeout_s, fingerprint=space.weights_fingerprint)
        return [replace(p, tags=machine_tags(np.asarray(p.vector, dtype=np.float32), styles, subjects),
                        placement=placement_tags(np.asarray(p.vector, dtype=np.float32), places))
                if p.vector is not None else p for p in points]

    async def placement(self, space: VectorSpace, points: Sequence[GalleryPoint]) -> Sequence[GalleryPoint]:
        """Only the body placement tags (uploads: their tags are the person's own, kept as given)."""
        if space.model not in self._text_models:
            return points
        vocabulary = self._vocabularies.get(space.model)
        if vocabulary is None:
            vocabulary = self._vocabularies[space.model] = Vocabulary(self._embed, space.model)
        places = await vocabulary.placements(self._timeout_s, fingerprint=space.weights_fingerprint)
        return [replace(p, placement=placement_tags(np.asarray(p.vector, dtype=np.float32), places))
                if p.vector is not None else p for p in points]

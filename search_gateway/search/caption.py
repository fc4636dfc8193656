"""Captioning: turn the query image into a short web-search query.

Pluggable behind :class:`Captioner`. The default is offline zero-shot tagging with
the clip text tower; the remote one asks an OpenAI-compatible vision model. The
chain never raises: remote -> offline -> the fixed ``FALLBACK_CAPTION``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import aiohttp
import numpy as np

from search_gateway.clients.backends import EmbedClient

log = logging.getLogger(__name__)

FALLBACK_CAPTION = "tattoo artwork"

STYLES: tuple[str, ...] = (
    "traditional", "neo-traditional", "tribal", "geometric", "mandala", "watercolor", "blackwork",
    "dotwork", "realism", "minimalist", "fine line", "japanese", "script", "new school", "trash polka",
    "chicano", "illustrative", "ornamental", "sketch", "biomechanical",
)
SUBJECTS: tuple[str, ...] = (
    "rose", "skull", "snake", "dragon", "wolf", "lion", "butterfly", "eagle", "tiger", "koi fish",
    "owl", "phoenix", "lotus", "peony", "anchor", "compass", "heart", "dagger", "moon", "sun",
    "mountain", "wave", "tree", "feather", "bird", "cat", "fox", "deer", "spider", "scorpion",
    "portrait", "geisha", "samurai", "clock", "eye", "hand", "cross", "angel", "demon", "lettering",
)

# Body placements (issue 22, item 4): machine tags scored like the styles and subjects, stored
# as a gallery point's ``placement``. Names as the API spells them; the prompt says them in words.
PLACEMENTS: tuple[str, ...] = (
    "forearm", "upper_arm", "sleeve", "hand", "finger", "back", "chest", "ribs", "stomach", "thigh", "calf",
    "ankle", "foot", "neck", "behind_the_ear", "shoulder",
)
# At most this many placements per image: the best, and those scored within the margin of it
# (zero-shot cosines of one image lie close together; the margin keeps the real contenders).
PLACEMENT_TOP = 3
PLACEMENT_MARGIN = 0.02


def placement_prompt(name: str) -> str:
    words = name.replace("_", " ")
    return f"a tattoo {words}" if name == "behind_the_ear" else f"a tattoo on the {words}"

class Captioner(Protocol):
    # The model whose image vector of the query this captioner reads, or None when it
    # needs none. The search computes that vector (once, shared with the ranking when
    # it is the search's own model) and hands it over as an awaitable.
    vector_model: str | None

    async def caption(self, image: bytes, image_vector: Awaitable[np.ndarray], *, timeout: float) -> str:
        """A search query for ``image``; may raise, :class:`CaptionChain` catches."""
        ...


class Vocabulary:
    """The style and subject prompt vectors of one text tower, computed once per weights.

    Shared by the offline captioner (best style and subject of a query image) and the
    gallery's machine tags (scored once per stored image, search/tagging.py).
    """

    def __init__(self, embed: EmbedClient, model: str) -> None:
        self._embed = embed
        self.model = model
        self._prompts: tuple[np.ndarray, np.ndarray, str] | None = None
        self._placements: tuple[np.ndarray, str] | None = None
        self._lock = asyncio.Lock()
        # The kind of weights the prompt vectors came from ("random": every caption is a guess).
        self.weights = ""

    async def vectors(self, timeout: float, fingerprint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(styles x dim, subjects x dim), unit rows. Asked again when ``fingerprint``
        (of the image vectors they will be scored against) is not the weights they came from."""
        async with self._lock:  # one computation shared by concurrent first callers
            if self._prompts is None or (fingerprint is not None and fingerprint != self._prompts[2]):
                styles = await self._embed.embed_text(
                    self.model, [f"a {s} style tattoo" for s in STYLES], timeout=timeout)
                subjects = await self._embed.embed_text(
                    self.model, [f"a tattoo of a {s}" for s in SUBJECTS], timeout=timeout)
                self._prompts = (_normalise(styles.vectors), _normalise(subjects.vectors),
                                 styles.provenance.weights_fingerprint)
                self.weights = styles.provenance.weights
            return self._prompts[0], self._prompts[1]

    async def placements(self, timeout: float, fingerprint: str | None = None) -> np.ndarray:
        """The placement prompt vectors (placements x dim, unit rows), asked again like ``vectors``."""
        async with self._lock:
            if self._placements is None or (fingerprint is not None and fingerprint != self._placements[1]):
                reply = await self._embed.embed_text(self.model, [placement_prompt(p) for p in PLACEMENTS],
                                                     timeout=timeout)
                self._placements = (_normalise(reply.vectors), reply.provenance.weights_fingerprint)
            return self._placements[0]


def placement_tags(vector: np.ndarray, prompts: np.ndarray) -> dict[str, float]:
    """The best placement of one image vector and those within PLACEMENT_MARGIN of it (at
    most PLACEMENT_TOP), with their cosines."""
    unit = _normalise(np.asarray(vector, dtype=np.float32)[None, :])[0]
    scores = prompts @ unit
    order = np.argsort(-scores)[:PLACEMENT_TOP]
    best = float(scores[int(order[0])])
    return {PLACEMENTS[int(i)]: round(float(scores[int(i)]), 6) for i in order
            if float(scores[int(i)]) >= best - PLACEMENT_MARGIN}


def machine_tags(vector: np.ndarray, styles: np.ndarray, subjects: np.ndarray, per_kind: int = 2) -> dict[str, float]:
    """The best ``per_kind`` styles and subjects of one image vector, with their cosines."""
    unit = _normalise(np.asarray(vector, dtype=np.float32)[None, :])[0]
    tags: dict[str, float] = {}
    for names, prompts in ((STYLES, styles), (SUBJECTS, subjects)):
        scores = prompts @ unit
        for i in np.argsort(-scores)[:per_kind]:
            tags[names[int(i)]] = round(float(scores[int(i)]), 6)
    return tags


class ZeroShotCaptioner:
    """Best style and best subject by cosine against prompt vectors from the text tower."""

    def __init__(self, embed: EmbedClient, model: str = "clip", vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or Vocabulary(embed, model)
        self.vector_model: str | None = model

    async def caption(self, image: bytes, image_vector: Awaitable[np.ndarray], *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        styles, subjects = await self.vocabulary.vectors(timeout)
        vector = _normalise((await asyncio.wait_for(image_vector, max(0.01, deadline - time.monotonic())))[None, :])[0]
        style = STYLES[int(np.argmax(styles @ vector))]
        subject = SUBJECTS[int(np.argmax(subjects @ vector))]
        return compose_query(style, subject)


def _guessing(captioner: Captioner) -> bool:
    """Whether the captioner's words come from a text tower with random weights (known once
    it has read its vocabulary, which its first caption does)."""
    return isinstance(captioner, ZeroShotCaptioner) and captioner.vocabulary.weights == "random"


def compose_query(style: str, subject: str) -> str:
    # "mandala" as a subject duplicates the style word; keep the query short and clean.
    words = [style] if subject in style else [style, subject]
    return " ".join([*words, "tattoo"])


_QUERY_OK = re.compile(r"^[\w\s'&,.-]{2,120}$", re.UNICODE)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

PROMPT = (
    "You write web image-search queries for tattoo designs. Look at the image and answer with "
    'exactly one JSON object and nothing else: {"query": "<style> <subject> tattoo"}, '
    "at most 8 words, for example {\"query\": \"geometric mandala tattoo\"}."
)


def parse_remote_answer(content: str) -> str:
    """Strict: one JSON object with a short plain-text ``query``; a code fence is tolerated."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    obj = json.loads(text)
    if not isinstance(obj, dict) or set(obj) != {"query"} or not isinstance(obj["query"], str):
        raise ValueError('expected exactly {"query": "..."}')
    query = " ".join(obj["query"].split())
    if not _QUERY_OK.match(query) or len(query.split()) > 12:
        raise ValueError("the query is empty, too long or has unexpected characters")
    return query


class RemoteCaptioner:
    """An OpenAI-compatible ``/chat/completions`` endpoint with a vision model."""

    vector_model: str | None = None

    def __init__(self, url: str, model: str, token: str,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        self._url = url if url.rstrip("/").endswith("/chat/completions") else url.rstrip("/") + "/chat/completions"
        self._model = model
        self._token = token
        self._session: aiohttp.ClientSession | None = None
        self._session_factory = session_factory or (lambda: aiohttp.ClientSession(trust_env=False))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def caption(self, image: bytes, image_vector: Awaitable[np.ndarray], *, timeout: float) -> str:
        if self._session is None:
            self._session = self._session_factory()
        data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
        body = {
            "model": self._model,
            "temperature": 0,
            "max_tokens": 60,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": data_url}},
            ]}],
        }
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with self._session.post(self._url, json=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise ValueError(f"captioning endpoint answered {resp.status}")
            raw = await resp.content.read(256 * 1024)  # bounded: the answer is a sentence
        answer = json.loads(raw)
        content = answer["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("the answer's content is not text")
        return parse_remote_answer(content)


class CaptionChain:
    """Tries each captioner in turn within the time given; never raises."""

    def __init__(self, captioners: Sequence[tuple[str, Captioner]]) -> None:
        self.captioners = list(captioners)
        models = {c.vector_model for _, c in self.captioners} - {None}
        if len(models) > 1:
            raise ValueError(f"captioners need image vectors of several models: {sorted(models)}")  # type: ignore[type-var]
        # The model of the image vector the chain may read, or None: see Captioner.
        self.vector_model: str | None = models.pop() if models else None

    async def caption(self, image: bytes, image_vector: asyncio.Future[np.ndarray] | None, *,
                      timeout: float) -> tuple[str, str]:
        """``(caption, source)`` where source names the captioner that answered, or "fallback".

        ``image_vector`` (for :attr:`vector_model`) is shared with the search, so each
        captioner gets a shielded view of it: giving up on it cancels the view only.
        """
        deadline = time.monotonic() + timeout
        for name, captioner in self.captioners:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            view = _view(image_vector if captioner.vector_model is not None else None)
            try:
                async with asyncio.timeout(remaining):
                    words = await captioner.caption(image, view, timeout=remaining)
                # A text tower with random weights words a guess: the reply says so ("offline-random").
                return words, f"{name}-random" if _guessing(captioner) else name
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure falls through to the next captioner
                log.info("captioner %s failed: %s: %s", name, type(exc).__name__, exc)
            finally:
                _release(view)
        return FALLBACK_CAPTION, "fallback"

    async def close(self) -> None:
        for _, captioner in self.captioners:
            close = getattr(captioner, "close", None)
            if close is not None:
                await close()


def _view(vector: asyncio.Future[np.ndarray] | None) -> asyncio.Future[np.ndarray]:
    if vector is None:
        missing: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        missing.set_exception(LookupError("no image vector was computed for this captioner"))
        return missing
    return asyncio.shield(vector)


def _release(view: asyncio.Future[np.ndarray]) -> None:
    if not view.done():
        view.cancel()  # the shared vector goes on
    elif not view.cancelled():
        view.exception()  # looked at, so asyncio does not log it as never retrieved


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    unit: np.ndarray = m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)
    return unit

"""The served models: each one's loading, state, runtime and batchers.

Each model loads on its own thread, so one slow or broken model never delays or
breaks another. A model that failed to load is FAILED with its reason (reported by
ListModels and in every request's error) and is tried again in the background, the
wait doubling from EMBED_LOAD_RETRY_INITIAL_S up to EMBED_LOAD_RETRY_MAX_S: weights
copied in later, or memory freed by another process, are picked up without a
restart. Requests meanwhile fail at once rather than each starting a load.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embed_server.batching import BatchObserver, DynamicBatcher
from embed_server.config import EmbedSettings
from embed_server.errors import ModelFailed, NoTextTower, UnknownModel
from embed_server.models import CARDS, ModelCard, Tokenizer, family
from embed_server.models.tokenizers import load_tokenizer
from embed_server.models.weights import fingerprint_files, locate_pretrained, random_source, weights_kind
from embed_server.runtimes.base import ModelWeights, Runtime
from embed_server.runtimes.factory import create_runtime

if TYPE_CHECKING:
    from embed_server.models.base import Towers

log = logging.getLogger(__name__)

def _return_freed_memory() -> None:
    """Hand memory freed while loading back to the OS.

    Loading parses each ONNX file (hundreds of MB) and frees it once the session holds
    the weights; loads run on parallel threads, each with its own glibc malloc arena,
    and glibc keeps such freed memory resident. Trimming after a load measurably
    lowers the resident set of a server with several models (docs/benchmarks.md).
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


class ModelState(enum.Enum):
    NOT_LOADED = "not loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ImageOutput:
    global_vector: np.ndarray  # (D,)
    patches: np.ndarray        # (N, P)


@dataclass(frozen=True)
class ModelDescription:
    """What the server knows of a loaded model, whichever runtime executes it.
    Dimensions are read off the running model, so tiny test models report their own."""

    card: ModelCard
    weights: str
    fingerprint: str
    global_dim: int
    patch_dim: int
    tokenizer: Tokenizer | None


@dataclass(frozen=True)
class LoadedModel:
    description: ModelDescription
    runtime: Runtime
    images: DynamicBatcher[np.ndarray, ImageOutput]
    texts: DynamicBatcher[np.ndarray, np.ndarray] | None


StateListener = Callable[["ServedModel"], Awaitable[None]]
# The observer of one model's batcher of one kind ("image", "text"): metrics.py's.
BatchObservers = Callable[[str, str], BatchObserver]


class ServedModel:
    def __init__(self, card: ModelCard, settings: EmbedSettings, observers: BatchObservers | None = None) -> None:
        self.card = card
        self.settings = settings
        self._observers = observers
        self.state = ModelState.NOT_LOADED
        self.error = ""
        self.loaded: LoadedModel | None = None
        self.load_attempts = 0
        self.next_retry_at: float | None = None  # Unix time of the next background try
        # Told of every change of state (the server keeps per-model health with it).
        self.listener: StateListener | None = None
        self._loading: asyncio.Task[LoadedModel] | None = None
        self._retry: asyncio.Task[None] | None = None

    @property
    def weights(self) -> str:
        if self.loaded:
            return self.loaded.description.weights
        return weights_kind(self.card, self.settings.weights, self.settings.architecture)

    async def ready(self) -> LoadedModel:
        """The loaded model, loading it first if needed."""
        if self.loaded is not None:
            return self.loaded
        if self.state is ModelState.FAILED:
            raise ModelFailed(f"model {self.card.name} failed to load: {self.error}{self._next_try()}")
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        # shield: a cancelled request must not cancel a load other requests wait on.
        return await asyncio.shield(self._loading)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self.loaded is not None:
            await self.loaded.images.close()
            if self.loaded.texts is not None:
                await self.loaded.texts.close()

    async def _load(self) -> LoadedModel:
        self.state = ModelState.LOADING
        self.load_attempts += 1
        self.next_retry_at = None
        log.info("loading %s (%s, weights=%s)", self.card.name, self.card.architecture, self.weights)
        await self._notify()
        try:
            description, runtime = await asyncio.to_thread(self._build)
        except Exception as exc:
            self.state = ModelState.FAILED
            self.error = str(exc) or type(exc).__name__
            delay = self._retry_delay()
            self.next_retry_at = time.time() + delay
            self._retry = asyncio.get_running_loop().create_task(self._retry_after(delay))
            _return_freed_memory()  # whatever the failed attempt allocated
            log.error("model %s failed to load (attempt %d): %s%s", self.card.name, self.load_attempts, self.error,
                      self._next_try())
            await self._notify()
            raise ModelFailed(f"model {self.card.name} failed to load: {self.error}{self._next_try()}") from None
        self.loaded = self._batchers(description, runtime)
        self.state = ModelState.READY
        self.error = ""
        _return_freed_memory()
        await self._notify()
        random = description.weights == "random"
        level = logging.WARNING if random else logging.INFO
        log.log(
            level,
            "model %s ready: weights=%s%s runtime=%s device=%s precision=%s providers=%s",
            self.card.name,
            description.weights,
            " (RANDOM: vectors say nothing about similarity)" if random else "",
            runtime.name,
            runtime.device,
            runtime.precision,
            ",".join(runtime.providers),
        )
        return self.loaded

    def _retry_delay(self) -> float:
        # Doubling per failed attempt: a missing checkpoint is retried often at first,
        # then rarely, never more often than every EMBED_LOAD_RETRY_MAX_S in the long run.
        initial, cap = self.settings.load_retry_initial_s, self.settings.load_retry_max_s
        return min(cap, initial * 2.0 ** min(self.load_attempts - 1, 60))

    def _next_try(self) -> str:
        if self.next_retry_at is None:
            return ""
        return f" (tried {self.load_attempts} times; next try in {max(0.0, self.next_retry_at - time.time()):.1f} s)"

    async def _retry_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._loading = asyncio.get_running_loop().create_task(self._load())
        try:
            await self._loading
        except ModelFailed:
            pass  # logged, and the next try scheduled, by _load

    async def _notify(self) -> None:
        if self.listener is None:
            return
        try:
            await self.listener(self)
        except Exception:  # a broken listener must not turn a load into a failure
            log.exception("state listener of %s failed", self.card.name)

    def _build(self) -> tuple[ModelDescription, Runtime]:
        settings, card = self.settings, self.card
        folder: Path | None = None
        kind = weights_kind(card, settings.weights, settings.architecture)
        if kind == "random":
            source = random_source(card, settings.architecture, settings.seed)
        else:
            folder = locate_pretrained(card, settings.weights_dir)
            source = fingerprint_files(folder)

        def build_towers() -> Towers:
            # The only place torch is needed: a torch runtime, or an export to make.
            from embed_server.models.seeded import build_random
            from embed_server.runtimes.torch_runtime import configure_torch_threads

            configure_torch_threads(settings.threads)
            if folder is not None:
                return family(card.name).load_pretrained(folder)
            # From the model's own generator, never torch's global one (see seeded).
            return build_random(card.name, settings.architecture, settings.seed)

        tokenizer = load_tokenizer(card, folder)
        # The torch modules are built inside the runtime only if it needs them: an ONNX
        # runtime with a warm export cache never builds them.
        runtime = create_runtime(card, ModelWeights(source, build_towers), settings, tokenizer)
        # One forward pass checks the grid and warms the runtime before traffic arrives.
        size = card.preprocess.image_size
        global_vecs, patches = runtime.run_image(np.zeros((1, 3, size, size), np.float32))
        grid_h, grid_w = card.grid
        if patches.shape[1] != grid_h * grid_w:
            raise RuntimeError(f"the image tower gave {patches.shape[1]} patches, expected {grid_h}x{grid_w}")
        if tokenizer is not None:
            runtime.run_text(tokenizer(["warm up"]))
        description = ModelDescription(
            card=card,
            weights=kind,
            fingerprint=runtime.weights_fingerprint,
            global_dim=int(global_vecs.shape[-1]),
            patch_dim=int(patches.shape[-1]),
            tokenizer=tokenizer,
        )
        return description, runtime

    def _batchers(self, description: ModelDescription, runtime: Runtime) -> LoadedModel:
        settings = self.settings

        def batcher(kind: str, run: Callable) -> DynamicBatcher:
            return DynamicBatcher(
                f"{self.card.name}/{kind}",
                run,
                max_batch_size=settings.max_batch_size,
                max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
                max_queue_size=settings.max_queue_size,
                on_drain=_return_freed_memory,  # after a burst: see bench/embed_burst.py
                observer=self._observers(self.card.name, kind) if self._observers is not None else None,
            )

        def run_images(items: list[np.ndarray]) -> list[ImageOutput]:
            global_vecs, patches = runtime.run_image(np.stack(items))
            return [ImageOutput(g, p) for g, p in zip(global_vecs, patches, strict=True)]

        def run_texts(items: list[np.ndarray]) -> list[np.ndarray]:
            return list(runtime.run_text(np.stack(items)))

        texts = batcher("text", run_texts) if description.tokenizer is not None else None
        return LoadedModel(description, runtime, batcher("image", run_images), texts)


class ModelPool:
    """Every served model by public name."""

    def __init__(self, settings: EmbedSettings, observers: BatchObservers | None = None) -> None:
        self.settings = settings
        self.models = {name: ServedModel(CARDS[name], settings, observers) for name in settings.models}

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name.strip().lower())
        if model is None:
            raise UnknownModel(name, tuple(self.models))
        return model

    def get_with_text(self, name: str) -> ServedModel:
        model = self.get(name)
        if not model.card.supports_text:
            raise NoTextTower(model.card.name, tuple(n for n, m in self.models.items() if m.card.supports_text))
        return model

    async def preload(self) -> bool:
        """Load every model concurrently; True when all are ready."""
        results = await asyncio.gather(*(m.ready() for m in self.models.values()), return_exceptions=True)
        return all(not isinstance(r, BaseException) for r in results)

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self.models.values()))

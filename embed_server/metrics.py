"""The embed server's Prometheus metrics, served on EMBED_METRICS_PORT.

Per model: the queue's depth (what an autoscaler watches), how long items waited and how
big the batches were, how long each forward pass took, images and texts embedded (rate()
gives the throughput), its state, and on a GPU the device's memory. Calls by method and
status (`embed_requests_total`) and in flight are counted by service_common for every
gRPC service alike.

Histograms and counters are fed by the batchers as passes finish (`batch_observer`); the
queue depth, the models' states and the device memory are read when Prometheus scrapes,
on the metrics server's thread: plain reads of numbers the event loop keeps, so a scrape
never waits on the loop and the loop never does work for metrics no one reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from embed_server.batching import BatchObserver, DynamicBatcher
from embed_server.device_memory import device_memory
from embed_server.model_pool import ModelPool, ModelState

NAMESPACE = "embed"
# From one image on a fast GPU to a full CPU batch of a large model.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Label values of embed_model_state: ModelState's, as Prometheus label values.
STATE_LABELS = {state: state.name.lower() for state in ModelState}


class EmbedMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_wait = Histogram(
            "embed_queue_wait_seconds", "Time an item waited in its model's queue before its forward pass began.",
            ("model", "kind"), buckets=SECONDS_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "embed_batch_size", "Items per forward pass.", ("model", "kind"), buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.inference = Histogram(
            "embed_inference_seconds", "Duration of one forward pass (one batch), failed ones included.",
            ("model", "kind"), buckets=SECONDS_BUCKETS, registry=r)
        self.failed_batches = Counter(
            "embed_failed_batches_total", "Forward passes that raised (every request in the batch failed).",
            ("model", "kind"), registry=r)
        self.items = {
            "image": Counter("embed_images_total", "Images embedded (rate() gives images per second).",
                             ("model",), registry=r),
            "text": Counter("embed_texts_total", "Texts embedded (rate() gives texts per second).",
                            ("model",), registry=r),
        }
        ProcessCollector(namespace="", registry=r)  # process_resident_memory_bytes, CPU seconds, open fds

    def batch_observer(self, model: str, kind: str) -> BatchObserver:
        """What the batcher of `model`'s `kind` ("image" or "text") reports to."""
        return _BatchMetrics(self, model, kind)

    def watch(self, pool: ModelPool) -> None:
        """Read `pool`'s queues, states and devices at every scrape."""
        self.registry.register(_PoolCollector(pool))


class _BatchMetrics:
    def __init__(self, metrics: EmbedMetrics, model: str, kind: str) -> None:
        # The labelled children are looked up once, not on every batch.
        self._wait = metrics.queue_wait.labels(model, kind)
        self._size = metrics.batch_size.labels(model, kind)
        self._inference = metrics.inference.labels(model, kind)
        self._failed = metrics.failed_batches.labels(model, kind)
        self._items = metrics.items[kind].labels(model)

    def batch_ran(self, waits_s: Sequence[float], run_s: float, ok: bool) -> None:
        for wait in waits_s:
            self._wait.observe(wait)
        self._size.observe(len(waits_s))
        self._inference.observe(run_s)
        if ok:
            self._items.inc(len(waits_s))
        else:
            self._failed.inc()


class _PoolCollector(Collector):
    def __init__(self, pool: ModelPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        images = GaugeMetricFamily(
            "embed_queue_depth",
            "Images waiting per model: queued for a forward pass plus admitted and being decoded.",
            labels=("model",))
        texts = GaugeMetricFamily(
            "embed_text_queue_depth", "Texts queued for a forward pass per model (text towers only).",
            labels=("model",))
        states = GaugeMetricFamily(
            "embed_model_state", "1 for the state each model is in (not_loaded, loading, ready, failed), else 0.",
            labels=("model", "state"))
        attempts = CounterMetricFamily(
            "embed_model_load_attempts", "Times each model began to load (failed loads are retried).",
            labels=("model",))
        devices: set[str] = set()
        for name, model in self._pool.models.items():
            loaded = model.loaded
            images.add_metric((name,), _depth(loaded.images) if loaded is not None else 0)
            if model.card.supports_text:
                text_batcher = loaded.texts if loaded is not None else None
                texts.add_metric((name,), _depth(text_batcher) if text_batcher is not None else 0)
            state = model.state
            for candidate, label in STATE_LABELS.items():
                states.add_metric((name, label), 1.0 if candidate is state else 0.0)
            attempts.add_metric((name,), model.load_attempts)
            if loaded is not None:
                devices.add(loaded.runtime.device)
        yield from (images, texts, states, attempts)
        yield from _device_memory(sorted(devices))


def _depth(batcher: DynamicBatcher) -> int:
    return batcher.queued + batcher.reserved


def _device_memory(devices: Sequence[str]) -> Iterator[GaugeMetricFamily]:
    readings = {device: device_memory(device) for device in devices}
    found = {device: reading for device, reading in readings.items() if reading is not None}
    if not found:
        return  # on CPU the series are absent, not zero
    used = GaugeMetricFamily(
        "embed_device_memory_used_bytes", "Memory in use on the GPU (all processes).", labels=("device",))
    total = GaugeMetricFamily("embed_device_memory_total_bytes", "Memory of the GPU.", labels=("device",))
    for device, reading in found.items():
        used.add_metric((device,), reading.used_bytes)
        total.add_metric((device,), reading.total_bytes)
    yield used
    yield total

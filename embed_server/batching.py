"""Dynamic batching, in the manner of Triton's dynamic batcher.

Concurrent requests for one model put their items (images or texts) on one queue; a
worker takes up to `max_batch_size` of them for a single forward pass, waiting at most
`max_queue_delay` for a batch to fill when the queue is short. The forward pass runs
on the batcher's own thread, so the event loop keeps accepting and decoding requests
meanwhile, and the next batch is already queued when the pass returns.

The queue is bounded: a request that does not fit is refused at once (the caller
answers RESOURCE_EXHAUSTED) rather than waiting behind an unbounded backlog. A
cancelled request (client gone, deadline passed) withdraws its items; those not yet
in a forward pass never reach one.

Admission comes before the expensive part: a request first reserves room for its
items (`reserve`), and only then decodes its images. Reserved room counts as taken,
so concurrent requests cannot all pass the check and then overfill the queue, and a
refused request never pays for (nor holds the memory of) decoding. The reservation
turns into queued items on `submit`, or is returned when the request fails or is
cancelled first. Queued plus reserved items never exceed `max_queue_size`, which
therefore also bounds the decoded images a model holds in memory.

An optional `BatchObserver` is told of every forward pass (how long each item waited,
how long the pass took), which the server turns into Prometheus metrics (metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from embed_server.errors import ModelUnavailable, Overloaded

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)


@dataclass
class BatchCounters:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    rejected: int = 0


class BatchObserver(Protocol):
    def batch_ran(self, waits_s: Sequence[float], run_s: float, ok: bool) -> None:
        """One forward pass over `len(waits_s)` items, each having waited `waits_s[i]`
        seconds in the queue; it took `run_s` seconds and succeeded unless `ok` is false."""


class Reservation:
    """Room for `count` items in a batcher's queue, held while they are prepared.

    A context manager: leaving it returns whatever `submit` did not take, whether the
    request failed, was cancelled or succeeded. Releasing twice is harmless.
    """

    def __init__(self, batcher: DynamicBatcher, count: int) -> None:
        self.count = count
        self._batcher: DynamicBatcher | None = batcher

    def release(self) -> None:
        if self._batcher is not None:
            self._batcher._reserved -= self.count
            self._batcher = None

    @property
    def held(self) -> bool:
        return self._batcher is not None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]
    queued_at: float = 0.0  # the loop's clock when the item joined the queue


class DynamicBatcher(Generic[ItemT, ResultT]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        on_drain: Callable[[], None] | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.counters = BatchCounters()
        self._run_batch = run_batch
        self._queue: deque[_Pending[ItemT, ResultT]] = deque()
        self._has_work = asyncio.Event()
        # One thread per batcher: forward passes of one model never overlap, and a slow
        # model never holds up another's.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{name}")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._reserved = 0  # items admitted but not queued yet (being decoded)
        # Called on the batcher's thread when the queue drains after a burst (at least a
        # queue's worth of items since the last call): the server hands the memory the
        # burst's requests and activations used back to the OS (glibc keeps it otherwise).
        self._on_drain = on_drain
        self._items_since_drain = 0
        self._observer = observer

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserve(self, count: int) -> Reservation:
        """Hold room for `count` items, or raise Overloaded at once when there is none."""
        self._check_room(count)
        self._reserved += count
        return Reservation(self, count)

    async def submit(self, items: Sequence[ItemT], reservation: Reservation | None = None) -> list[ResultT]:
        """Results for `items`, in order, once the forward passes holding them ran.

        With a held `reservation` for these items the room is already theirs; without
        one, the items are admitted (or refused) here.
        """
        if not items:
            if reservation is not None:
                reservation.release()
            return []
        if reservation is not None and reservation.held and reservation.count == len(items):
            if self._closed:
                raise ModelUnavailable(f"{self.name} is shutting down")
            # Released and queued with no await in between: the room passes from the
            # reservation to the queue without a moment in which another request could take it.
            reservation.release()
        else:
            self._check_room(len(items))
        self._start_worker()
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = [_Pending[ItemT, ResultT](item, loop.create_future(), now) for item in items]
        self._queue.extend(pending)
        self._has_work.set()
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        except BaseException:
            self._withdraw(pending)
            raise

    def _check_room(self, count: int) -> None:
        if self._closed:
            raise ModelUnavailable(f"{self.name} is shutting down")
        if len(self._queue) + self._reserved + count > self.max_queue_size:
            self.counters.rejected += 1
            raise Overloaded(
                f"{self.name} is overloaded: {len(self._queue)} items are queued and {self._reserved} "
                f"being prepared (limit {self.max_queue_size}); retry shortly"
            )

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(ModelUnavailable(f"{self.name} is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    def _withdraw(self, pending: list[_Pending[ItemT, ResultT]]) -> None:
        mine = {id(p) for p in pending}
        self._queue = deque(p for p in self._queue if id(p) not in mine)
        for p in pending:
            if not p.future.done():
                p.future.cancel()
            elif not p.future.cancelled():
                p.future.exception()  # mark retrieved: the request already failed

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._reserved and self._items_since_drain >= self.max_queue_size:
                self._items_since_drain = 0
                if self._on_drain is not None:
                    await loop.run_in_executor(self._executor, self._on_drain)
            while not self._queue:
                self._has_work.clear()
                await self._has_work.wait()
            await self._wait_for_fuller_batch(loop)
            batch: list[_Pending[ItemT, ResultT]] = []
            while self._queue and len(batch) < self.max_batch_size:
                pending = self._queue.popleft()
                if not pending.future.done():
                    batch.append(pending)
            if not batch:
                continue
            started = loop.time()
            try:
                results, run_s = await loop.run_in_executor(self._executor, self._timed_run, [p.item for p in batch])
            except Exception as exc:  # the forward pass failed: fail exactly this batch
                log.exception("forward pass of %s failed on a batch of %d", self.name, len(batch))
                self._observe(batch, started, loop.time() - started, ok=False)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.counters.batches += 1
            self.counters.items += len(batch)
            self._items_since_drain += len(batch)
            self.counters.largest_batch = max(self.counters.largest_batch, len(batch))
            self._observe(batch, started, run_s, ok=True)
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)

    def _timed_run(self, items: list[ItemT]) -> tuple[Sequence[ResultT], float]:
        # Timed on the batcher's thread: the pass alone, not the hops to and from the loop.
        started = time.perf_counter()
        results = self._run_batch(items)
        return results, time.perf_counter() - started

    def _observe(self, batch: list[_Pending[ItemT, ResultT]], started: float, run_s: float, *, ok: bool) -> None:
        if self._observer is None:
            return
        try:
            self._observer.batch_ran([started - p.queued_at for p in batch], run_s, ok)
        except Exception:  # metrics must never fail a batch
            log.exception("batch observer of %s failed", self.name)

    async def _wait_for_fuller_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.max_queue_delay_s <= 0:
            return
        deadline = loop.time() + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._has_work.clear()
            try:
                await asyncio.wait_for(self._has_work.wait(), remaining)
            except TimeoutError:
                return

"""The import as three stages joined by bounded queues, so memory stays flat however many
files there are: find, hash and check the format (one file at a time, in a thread) -> ask the gateway which
hashes it holds (in groups) -> batch and upload (a few requests in flight).

Only a window of inputs is ever in memory: the hash group, the upload queue and the
batches in flight. What grows with the folder is the set of hashes seen in this run
(32 bytes each: about 10 MB for 100,000 files), which reports a second copy of the
same bytes as a duplicate without sending it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulk_importer.client import GatewayClient, GaveUp, Refused, TooLarge
from bulk_importer.formats import NOT_AN_IMAGE, is_image
from bulk_importer.hashing import sha256_of
from bulk_importer.report import Report
from bulk_importer.sources import Source, walk

_END = None
# Kept in step with search_gateway/collections/uploads.py QUOTA_REACHED (the importer imports nothing of the server).
QUOTA_REACHED = "quota_reached"
_QUOTA_REACHED = ("Not sent: the gateway said your collections are full (its quota of images); delete some, "
                  "or ask the operator for more, and run again.")


@dataclass
class Limits:
    """Per-request limits; lowered when a 413 names the gateway's own."""

    files: int = 32
    bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Queued:
    source: Source
    sha256: str | None = None  # None for a URL: the gateway fetches it, so only it knows the hash


def _next_hashed(items: Iterator[Source]) -> tuple[Source, str | None, str | None] | None:
    """The next input with its hash, or why it could not be read; None at the end."""
    source = next(items, None)
    if source is None or source.path is None:
        return None if source is None else (source, None, None)
    try:
        sha256, head = sha256_of(source.path)
    except OSError as exc:
        return source, None, f"The file could not be read: {exc.strerror or exc}."
    return source, sha256, None if is_image(head) else NOT_AN_IMAGE


class Importer:
    def __init__(self, client: GatewayClient, report: Report, limits: Limits, *, concurrency: int = 4,
                 hash_group: int = 500) -> None:
        self.client = client
        self.report = report
        self.limits = limits
        self.concurrency = concurrency
        self.hash_group = hash_group
        self.seen: dict[bytes, str] = {}
        # Set once the gateway says the tenant's quota is reached: nothing more is sent.
        self.quota_reached = False
        self.uploads: asyncio.Queue[Queued | None] = asyncio.Queue(maxsize=max(64, 2 * limits.files))
        self.batches: asyncio.Queue[list[Queued] | None] = asyncio.Queue(maxsize=concurrency)

    async def run(self, paths: list[Path]) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._find(walk(paths)))
            tasks.create_task(self._batch())
            for _ in range(self.concurrency):
                tasks.create_task(self._upload())

    # --- stage 1 and 2: find, hash, skip what the collection holds
    async def _find(self, items: Iterator[Source]) -> None:
        group: list[Queued] = []
        while (found := await asyncio.to_thread(_next_hashed, items)) is not None:
            source, sha256, problem = found
            if problem == NOT_AN_IMAGE:
                self.report.record(source.label, "rejected", sha256=sha256, reason=problem)
            elif problem:
                self.report.record(source.label, "failed", reason=problem)
            elif sha256 is None:
                await self.uploads.put(Queued(source))
            else:
                group.append(Queued(source, sha256))
                if len(group) >= self.hash_group:
                    await self._skip_present(group)
                    group = []
        await self._skip_present(group)
        await self.uploads.put(_END)

    async def _skip_present(self, group: list[Queued]) -> None:
        if not group:
            return
        try:
            present = await self.client.present(list(dict.fromkeys(q.sha256 for q in group if q.sha256)))
        except (GaveUp, Refused) as exc:
            for q in group:
                self.report.record(q.source.label, "failed", sha256=q.sha256, reason=str(exc))
            return
        for q in group:
            assert q.sha256 is not None
            first = self.seen.setdefault(bytes.fromhex(q.sha256), q.source.label)
            if q.sha256 in present:
                self.report.record(q.source.label, "skipped", sha256=q.sha256, reason="already in the collection")
            elif first != q.source.label:
                self.report.record(q.source.label, "duplicate", sha256=q.sha256, reason=f"same bytes as {first}")
            else:
                await self.uploads.put(q)

    # --- stage 3: batches within the limits, a few in flight
    async def _batch(self) -> None:
        batch: list[Queued] = []
        size = 0
        while (q := await self.uploads.get()) is not _END:
            assert q is not None
            if batch and not self._fits(len(batch), size, q):
                await self.batches.put(batch)
                batch, size = [], 0
            batch.append(q)
            size += q.source.size
        if batch:
            await self.batches.put(batch)
        for _ in range(self.concurrency):
            await self.batches.put(_END)

    async def _upload(self) -> None:
        while (batch := await self.batches.get()) is not _END:
            assert batch is not None
            await self._send(batch)

    async def _send(self, batch: list[Queued]) -> None:
        if self.quota_reached:
            # Every further upload would be refused the same way: reported failed, so that a
            # run after images were deleted (or the quota raised) sends exactly these.
            for q in batch:
                self.report.record(q.source.label, "failed", sha256=q.sha256, reason=_QUOTA_REACHED)
            return
        files: dict[Path, bytes] = {}
        for q in list(batch):
            if q.source.path is not None:
                try:  # read now, not earlier: only the batches in flight are in memory
                    files[q.source.path] = await asyncio.to_thread(q.source.path.read_bytes)
                except OSError as exc:
                    self.report.record(q.source.label, "failed", sha256=q.sha256,
                                       reason=f"The file could not be read: {exc.strerror or exc}.")
                    batch.remove(q)
        if not batch:
            return
        try:
            results = await self.client.upload([q.source for q in batch], files)
        except TooLarge as exc:
            if len(batch) == 1:
                self.report.record(batch[0].source.label, "rejected", sha256=batch[0].sha256, reason=exc.detail)
                return
            self._learn(exc, len(batch))
            for part in self._split(batch):
                await self._send(part)
            return
        except (GaveUp, Refused) as exc:
            for q in batch:
                self.report.record(q.source.label, "failed", sha256=q.sha256, reason=str(exc))
            return
        for q, result in zip(batch, results, strict=True):
            if result.get("code") == QUOTA_REACHED:
                self.quota_reached = True
            status = str(result.get("status", "failed"))
            self.report.record(q.source.label, status, sha256=q.sha256, id=result.get("id"),
                               reason=result.get("reason"))

    def _fits(self, files: int, size: int, q: Queued) -> bool:
        """Whether ``q`` still fits a batch of ``files`` inputs and ``size`` bytes."""
        return files < self.limits.files and size + q.source.size <= self.limits.bytes

    def _split(self, batch: list[Queued]) -> list[list[Queued]]:
        """The batch in parts within the limits (at least two: the whole was refused)."""
        parts: list[list[Queued]] = [[]]
        size = 0
        for q in batch:
            if parts[-1] and not self._fits(len(parts[-1]), size, q):
                parts.append([])
                size = 0
            parts[-1].append(q)
            size += q.source.size
        if len(parts) == 1:
            half = len(batch) // 2
            parts = [batch[:half], batch[half:]]
        return parts

    def _learn(self, exc: TooLarge, sent: int) -> None:
        # What the 413 named, or else half of what was refused; batches after this one obey it.
        if exc.max_files is not None:
            self.limits.files = max(1, min(self.limits.files, exc.max_files))
        elif exc.max_bytes is not None:
            self.limits.bytes = max(1, min(self.limits.bytes, exc.max_bytes * 9 // 10))
        else:
            self.limits.files = max(1, min(self.limits.files, sent // 2))


def count(paths: list[Path]) -> int:
    """How many inputs there are (for the progress bar's ETA): a walk that keeps nothing."""
    return sum(1 for _ in walk(paths))


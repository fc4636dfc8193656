"""Per-input outcomes: one JSON line each in the report file, and the counts for the summary.

Statuses: ``added``, ``duplicate`` (the collection or this run had the same bytes),
``rejected`` (the gateway's reason: not an image, too large...), ``skipped`` (the
collection held the file's hash before it was sent) and ``failed`` (the gateway could
not be reached or refused the request: run again to send these).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

STATUSES = ("added", "duplicate", "skipped", "rejected", "failed")


class Report:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self.on_record: Callable[[], None] = lambda: None  # the progress bar

    def record(self, label: str, status: str, *, sha256: str | None = None, id: str | None = None,
               reason: str | None = None) -> None:
        entry: dict[str, Any] = {"input": label, "status": status}
        for key, value in (("sha256", sha256), ("id", id), ("reason", reason)):
            if value:
                entry[key] = value
        # Line-buffered by hand: a killed importer leaves every finished line behind.
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self.counts[status] += 1
        if reason and status in ("rejected", "failed"):
            self.reasons[f"{status}: {reason}"] += 1
        self.on_record()

    def close(self) -> None:
        self._file.close()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        lines = [", ".join(f"{self.counts[s]} {s}" for s in STATUSES)]
        lines += [f"  {n} x {reason}" for reason, n in self.reasons.most_common(10)]
        lines.append(f"Report: {self.path}")
        return "\n".join(lines)

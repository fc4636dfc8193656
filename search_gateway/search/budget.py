"""The time budget of one search: every stage's timeouts are cut from it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.at = self.started + seconds

    def remaining(self) -> float:
        return self.at - self._clock()

    def timeout(self, floor: float) -> float:
        """What is left, but at least ``floor``: a call given no time at all would not even start."""
        return max(floor, self.remaining())

    def elapsed(self) -> float:
        return self._clock() - self.started

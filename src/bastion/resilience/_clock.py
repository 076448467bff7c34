"""The clock every resilience policy takes: monotonic seconds, injected for tests.

Must never: read wall time (it jumps); policies take ``clock`` so tests step time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(0.5)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

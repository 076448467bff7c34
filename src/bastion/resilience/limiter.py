"""Adaptive concurrency limit per backend, gradient style (Netflix concurrency-limits'
Gradient2).

Owns: the in-flight count and the current limit. The limit follows
``limit * clamp(tolerance * long_rtt / short_rtt, 0.5, 1) + sqrt(limit)``: while latency
stays near its long-run level the limit grows by a queue allowance of sqrt(limit); when
latency rises (the backend is queueing) the gradient falls below 1 and the limit shrinks,
so excess load waits in the gateway's bounded queue or is shed instead of piling up inside
a slow backend. A dropped request (timeout, refused) cuts the limit by ``backoff``.

Must never: block or sleep; the gateway asks ``try_acquire`` and queues on its own.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    __slots__ = (
        "backoff",
        "inflight",
        "limit",
        "long_rtt",
        "max_limit",
        "min_limit",
        "samples",
        "short_rtt",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        *,
        initial: float = 32.0,
        min_limit: float = 4.0,
        max_limit: float = 512.0,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        backoff: float = 0.9,
    ) -> None:
        self.limit = float(initial)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.backoff = backoff
        self.inflight = 0
        self.long_rtt = 0.0
        self.short_rtt = 0.0
        self.samples = 0

    def try_acquire(self) -> bool:
        if self.inflight < self.limit:
            self.inflight += 1
            return True
        return False

    def release(self, rtt_s: float | None, *, dropped: bool = False) -> None:
        """One request finished: its latency, or ``dropped`` for a timeout/refusal."""
        inflight = self.inflight
        self.inflight = inflight - 1 if inflight > 0 else 0
        if dropped:
            self.limit = max(self.min_limit, self.limit * self.backoff)
            return
        if rtt_s is None:
            return
        self.samples += 1
        if self.samples == 1:
            self.long_rtt = self.short_rtt = rtt_s
            return
        # Long-run latency moves slowly (about 500 samples), the short one quickly (10).
        self.long_rtt += (rtt_s - self.long_rtt) * 0.002
        self.short_rtt += (rtt_s - self.short_rtt) * 0.1
        # App-limited: far below the limit, latency says nothing about capacity.
        if inflight * 2 < self.limit:
            return
        gradient = self.tolerance * self.long_rtt / self.short_rtt if self.short_rtt > 0 else 1.0
        gradient = 0.5 if gradient < 0.5 else (1.0 if gradient > 1.0 else gradient)
        target = self.limit * gradient + math.sqrt(self.limit)
        limit = self.limit * (1.0 - self.smoothing) + target * self.smoothing
        self.limit = self.min_limit if limit < self.min_limit else min(limit, self.max_limit)

    def statistics(self) -> dict[str, Any]:
        return {
            "limit": round(self.limit, 2),
            "inflight": self.inflight,
            "long_rtt_ms": round(self.long_rtt * 1e3, 3),
            "short_rtt_ms": round(self.short_rtt * 1e3, 3),
            "samples": self.samples,
        }

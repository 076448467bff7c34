"""Adaptive concurrency limit per backend, gradient style (Netflix concurrency-limits'
Gradient2, wrapped in its WindowedLimit).

Owns: the in-flight count and the current limit. Once per window (at least ``window_s``
and ``min_samples`` samples) the limit follows
``limit * clamp(tolerance * long_rtt / window_rtt, 0.5, 1) + sqrt(limit)``: while latency
stays near its long-run level the limit grows by a queue allowance of sqrt(limit); when
latency rises (the backend is queueing) the gradient falls below 1 and the limit shrinks,
so excess load waits in the gateway's bounded queue or is shed instead of piling up inside
a slow backend. A window with a dropped request (timeout, refused) cuts the limit by
``backoff`` instead.

Why windows: updated per sample, a 3x latency blip of 50 requests (a GC pause, a noisy
neighbour) compounds to a ~200x smaller limit and the gateway sheds load a healthy
backend could take. Per window, the limit moves at most once per ``window_s``.

Must never: block or sleep; the gateway asks ``try_acquire`` and queues on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bastion.resilience._clock import Clock, monotonic

__all__ = ["AdaptiveLimit", "AdaptiveLimitStatistics"]


@dataclass(frozen=True, slots=True)
class AdaptiveLimitStatistics:
    """An adaptive concurrency limit at one moment.

    Attributes:
        limit: requests allowed in flight at once now.
        inflight: requests in flight now.
        long_rtt_ms: the slow-moving latency baseline (milliseconds).
        short_rtt_ms: the mean latency of the last window (milliseconds).
        samples: latency samples taken over the limit's life.
        updates: times the limit was recomputed (at most once per window).
    """

    limit: float
    inflight: int
    long_rtt_ms: float
    short_rtt_ms: float
    samples: int
    updates: int


class AdaptiveLimit:
    __slots__ = (
        "_clock",
        "_win_dropped",
        "_win_inflight",
        "_win_n",
        "_win_start",
        "_win_sum",
        "backoff",
        "inflight",
        "limit",
        "long_rtt",
        "max_limit",
        "min_limit",
        "min_samples",
        "samples",
        "short_rtt",
        "smoothing",
        "tolerance",
        "updates",
        "window_s",
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
        window_s: float = 0.1,
        min_samples: int = 10,
        clock: Clock = monotonic,
    ) -> None:
        self.limit = float(initial)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.backoff = backoff
        self.window_s = window_s
        self.min_samples = min_samples
        self._clock = clock
        self.inflight = 0
        self.long_rtt = 0.0
        self.short_rtt = 0.0
        self.samples = 0
        self.updates = 0
        self._win_start = clock()
        self._win_sum = 0.0
        self._win_n = 0
        self._win_inflight = 0
        self._win_dropped = False

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
            self._win_dropped = True
        elif rtt_s is not None:
            self.samples += 1
            self._win_sum += rtt_s
            self._win_n += 1
            self._win_inflight = max(self._win_inflight, inflight)
        elif not dropped:
            return
        now = self._clock()
        if now - self._win_start < self.window_s or (
            self._win_n < self.min_samples and not self._win_dropped
        ):
            return
        self._update()
        self._win_start = now
        self._win_sum = 0.0
        self._win_n = 0
        self._win_inflight = 0
        self._win_dropped = False

    def _update(self) -> None:
        self.updates += 1
        if self._win_dropped:
            self.limit = max(self.min_limit, self.limit * self.backoff)
            return
        rtt = self._win_sum / self._win_n
        self.short_rtt = rtt
        if self.long_rtt == 0.0:
            self.long_rtt = rtt
            return
        # The long-run latency follows the windows slowly (about 50 windows, 5 s).
        self.long_rtt += (rtt - self.long_rtt) * 0.02
        # App-limited: far below the limit, latency says nothing about capacity.
        if self._win_inflight * 2 < self.limit:
            return
        gradient = self.tolerance * self.long_rtt / rtt if rtt > 0 else 1.0
        gradient = 0.5 if gradient < 0.5 else (1.0 if gradient > 1.0 else gradient)
        target = self.limit * gradient + math.sqrt(self.limit)
        limit = self.limit * (1.0 - self.smoothing) + target * self.smoothing
        self.limit = self.min_limit if limit < self.min_limit else min(limit, self.max_limit)

    def statistics(self) -> AdaptiveLimitStatistics:
        return AdaptiveLimitStatistics(
            limit=self.limit,
            inflight=self.inflight,
            long_rtt_ms=self.long_rtt * 1e3,
            short_rtt_ms=self.short_rtt * 1e3,
            samples=self.samples,
            updates=self.updates,
        )

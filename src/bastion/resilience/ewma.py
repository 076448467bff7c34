"""Exponentially weighted moving average over time, with an optional peak mode.

Owns: one smoothed value whose memory is ``tau_s`` seconds regardless of the request rate
(Finagle's and Linkerd's "peak EWMA" for load balancing: a slow sample raises the value
at once, fast samples bring it down smoothly, so a backend that just got slow stops
attracting traffic immediately).

Must never: allocate per update, or read any clock but the injected one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bastion.resilience._clock import Clock, monotonic

__all__ = ["Ewma", "EwmaStatistics"]


@dataclass(frozen=True, slots=True)
class EwmaStatistics:
    """A moving average's state.

    Attributes:
        value: the smoothed value now (seconds, for latencies).
        count: samples seen.
        tau_s: its memory: a sample's weight falls to 1/e after this many seconds.
        peak: whether a sample above the value replaces it at once (peak EWMA).
    """

    value: float
    count: int
    tau_s: float
    peak: bool


class Ewma:
    __slots__ = ("_clock", "_last", "count", "peak", "tau_s", "value")

    def __init__(
        self,
        *,
        tau_s: float = 10.0,
        initial: float = 0.0,
        peak: bool = False,
        clock: Clock = monotonic,
    ) -> None:
        if tau_s <= 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = tau_s
        self.value = initial
        self.peak = peak
        self.count = 0
        self._clock = clock
        self._last = clock()

    def update(self, sample: float) -> float:
        now = self._clock()
        if self.count == 0 or (self.peak and sample > self.value):
            self.value = sample
        else:
            weight = math.exp(-max(now - self._last, 0.0) / self.tau_s)
            self.value = self.value * weight + sample * (1.0 - weight)
        self._last = now
        self.count += 1
        return self.value

    def statistics(self) -> EwmaStatistics:
        return EwmaStatistics(value=self.value, count=self.count, tau_s=self.tau_s, peak=self.peak)

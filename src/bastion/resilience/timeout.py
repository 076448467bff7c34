"""Adaptive timeout: how long to wait for something that usually takes a known time, from
the times it took (the gateway's time-to-first-token timeout).

Owns: the rule ``clamp(factor * quantile(recent samples), floor_s, cap_s)``, with
``cap_s`` until ``min_samples`` are in. The cap is a small fraction of the request's
deadline, so a hung backend costs that fraction, not the whole deadline, before the
request moves on; the factor over a high quantile keeps a healthy backend's slow-but-normal
answers well inside it. The samples live in a ``HedgeTimer`` ring (the same quantile
machinery hedging uses).

Must never: return more than ``cap_s`` or less than ``floor_s`` (a timeout tighter than
the noise would eject healthy backends); read a clock (it holds samples, not times).
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.resilience.hedge import HedgeTimer

__all__ = ["AdaptiveTimeout", "AdaptiveTimeoutStatistics"]


@dataclass(frozen=True, slots=True)
class AdaptiveTimeoutStatistics:
    """An adaptive timeout.

    Attributes:
        timeout_s: the timeout in force now (seconds).
        quantile: the quantile of recent samples it follows.
        observed_s: that quantile now, or None while fewer than ``min_samples`` are in.
        factor: how many times the quantile the timeout is.
        floor_s: the least it may be.
        cap_s: the most it may be, and its value while cold.
        samples: samples in the ring.
    """

    timeout_s: float
    quantile: float
    observed_s: float | None
    factor: float
    floor_s: float
    cap_s: float
    samples: int


class AdaptiveTimeout:
    __slots__ = ("_ring", "cap_s", "factor", "floor_s", "quantile")

    def __init__(
        self,
        *,
        cap_s: float,
        quantile: float = 0.99,
        factor: float = 4.0,
        floor_s: float = 0.25,
        window: int = 512,
        refresh: int = 64,
        min_samples: int = 50,
    ) -> None:
        if cap_s <= 0:
            raise ValueError(f"cap_s must be > 0, got {cap_s}")
        self.cap_s = cap_s
        self.floor_s = min(floor_s, cap_s)
        self.factor = factor
        self.quantile = quantile
        self._ring = HedgeTimer(
            quantile=quantile,
            window=window,
            refresh=refresh,
            min_samples=min_samples,
            min_delay_s=0.0,
            max_delay_s=cap_s,
        )

    def observe(self, seconds: float) -> None:
        self._ring.observe(seconds)

    def timeout(self) -> float:
        observed = self._ring.delay()
        if observed is None:
            return self.cap_s
        value = observed * self.factor
        return self.cap_s if value > self.cap_s else max(value, self.floor_s)

    def statistics(self) -> AdaptiveTimeoutStatistics:
        return AdaptiveTimeoutStatistics(
            timeout_s=self.timeout(),
            quantile=self.quantile,
            observed_s=self._ring.delay(),
            factor=self.factor,
            floor_s=self.floor_s,
            cap_s=self.cap_s,
            samples=self._ring.statistics().samples,
        )

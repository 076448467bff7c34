"""Hedge timer: when to send a second attempt, from a latency quantile or a fixed delay.

Owns: a ring of recent successful latencies and the quantile computed from it. The
quantile is recomputed every ``refresh`` samples (a sort of ``window`` floats), not per
request, so asking for the delay costs nothing on the hot path. Unconditional hedging
(Envoy #20036 asks for it): the gateway hedges any request still unanswered after
``delay()``, bounded by the retry budget so hedges cannot double the load.

The grammar users write (``off``, ``p95``, ``50ms``) is the manifest's
(``GatewayPolicy.hedge_rule``); this timer takes the parsed numbers.

Must never: return a delay below ``min_delay_s`` (hedging every request wastes capacity)
or hedge before it has ``min_samples`` (a cold quantile is noise).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HedgeTimer", "HedgeTimerStatistics"]


@dataclass(frozen=True, slots=True)
class HedgeTimerStatistics:
    """When the gateway hedges now, and from what.

    Attributes:
        quantile: the latency quantile hedging follows (0.95 for ``p95``), or None.
        fixed_ms: the fixed hedge delay in milliseconds (``50ms``), or None.
        delay_ms: the delay in force now, or None while hedging is off or still cold.
        samples: latencies in the ring the quantile is taken from.
    """

    quantile: float | None
    fixed_ms: float | None
    delay_ms: float | None
    samples: int


class HedgeTimer:
    __slots__ = (
        "_i",
        "_n",
        "_ring",
        "_since",
        "_value",
        "fixed_s",
        "max_delay_s",
        "min_delay_s",
        "min_samples",
        "quantile",
        "refresh",
    )

    def __init__(
        self,
        *,
        quantile: float | None = 0.95,
        fixed_s: float | None = None,
        window: int = 512,
        refresh: int = 64,
        min_samples: int = 50,
        min_delay_s: float = 0.002,
        max_delay_s: float = 1.0,
    ) -> None:
        self.quantile = quantile
        self.fixed_s = fixed_s
        self._ring = [0.0] * window
        self._i = 0
        self._n = 0
        self._since = 0
        self.refresh = refresh
        self.min_samples = min_samples
        self.min_delay_s = min_delay_s
        self.max_delay_s = max_delay_s
        self._value: float | None = None

    @property
    def enabled(self) -> bool:
        return self.quantile is not None or self.fixed_s is not None

    def observe(self, latency_s: float) -> None:
        if self.quantile is None:
            return
        ring = self._ring
        ring[self._i] = latency_s
        self._i = (self._i + 1) % len(ring)
        if self._n < len(ring):
            self._n += 1
        self._since += 1
        if self._since >= self.refresh and self._n >= self.min_samples:
            self._since = 0
            ordered = sorted(ring[: self._n])
            q = ordered[min(self._n - 1, int(self.quantile * self._n))]
            self._value = min(max(q, self.min_delay_s), self.max_delay_s)

    def delay(self) -> float | None:
        """Seconds to wait before hedging, or None (do not hedge yet / hedging off)."""
        if self.fixed_s is not None:
            return self.fixed_s
        return self._value

    def statistics(self) -> HedgeTimerStatistics:
        d = self.delay()
        return HedgeTimerStatistics(
            quantile=self.quantile,
            fixed_ms=None if self.fixed_s is None else self.fixed_s * 1e3,
            delay_ms=None if d is None else d * 1e3,
            samples=self._n,
        )

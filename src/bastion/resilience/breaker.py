"""Circuit breaker per backend: closed -> open -> half_open -> closed.

Owns: the breaker's state, its failure counters and its ejection back-off. It decides
*whether* failures justify tripping; the caller decides whether tripping is *allowed*
(the ejection cap lives in ``outlier``), then calls ``trip``.

Rules (why each):
- A *hard* failure (connection refused, connect/read timeout, probe failure) trips at
  once: a dead replica must stop receiving traffic on the first failure, not after a
  minute of statistics (LiteLLM's per-minute ``allowed_fails`` and Ray Serve's ~30 s).
- *Soft* failures (5xx) trip on ``consecutive`` errors in a row, or on an error rate above
  ``failure_rate`` once ``min_requests`` were seen in the current window (Envoy's
  consecutive_5xx and success-rate outlier rules).
- Open lasts ``base_open_s * n`` for the n-th trip in a row, capped at ``max_open_s``
  (Envoy's base_ejection_time), then one trial request is let through (half_open). An
  active probe that succeeds also moves open -> half_open early: the replica proves it
  is alive, a real request proves it serves.

Must never: do I/O, sleep, or read a clock other than the injected one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bastion.resilience._clock import Clock, monotonic

__all__ = ["BreakerState", "CircuitBreaker", "CircuitBreakerStatistics"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CircuitBreakerStatistics:
    """A circuit breaker at one moment.

    Attributes:
        state: ``closed`` (traffic flows), ``open`` (none until ``open_for_s`` has passed)
            or ``half_open`` (one trial request at a time decides).
        failures_in_row: failures since the last success.
        trips: times the breaker opened, over its life.
        trips_in_row: trips with no success between them; the n-th stays open n times
            ``base_open_s`` (capped).
        open_for_s: seconds until an open breaker lets a trial through; 0 unless open.
        window_requests: requests counted in the current failure-rate window.
        window_failures: failures among them.
    """

    state: BreakerState
    failures_in_row: int
    trips: int
    trips_in_row: int
    open_for_s: float
    window_requests: int
    window_failures: int


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_trial_out",
        "_win_fail",
        "_win_start",
        "_win_total",
        "base_open_s",
        "consecutive",
        "failure_rate",
        "failures_in_row",
        "max_open_s",
        "min_requests",
        "open_until",
        "state",
        "trips",
        "trips_in_row",
        "window_s",
    )

    def __init__(
        self,
        *,
        consecutive: int = 5,
        failure_rate: float = 0.5,
        min_requests: int = 20,
        window_s: float = 10.0,
        base_open_s: float = 1.0,
        max_open_s: float = 30.0,
        clock: Clock = monotonic,
    ) -> None:
        self.consecutive = consecutive
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.window_s = window_s
        self.base_open_s = base_open_s
        self.max_open_s = max_open_s
        self._clock = clock
        self.state: BreakerState = "closed"
        self.failures_in_row = 0
        self.trips = 0
        self.trips_in_row = 0
        self.open_until = 0.0
        self._trial_out = False
        self._win_start = clock()
        self._win_total = 0
        self._win_fail = 0

    def allow(self) -> bool:
        """May a request go to this backend now? In half_open, only one trial at a time."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self._clock() < self.open_until:
                return False
            self.state = "half_open"
            self._trial_out = False
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def available(self) -> bool:
        """Like ``allow`` but without claiming the half_open trial (for routing scans)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return self._clock() >= self.open_until
        return not self._trial_out

    def _window(self) -> None:
        now = self._clock()
        if now - self._win_start >= self.window_s:
            self._win_start = now
            self._win_total = 0
            self._win_fail = 0

    def record_success(self) -> bool:
        """Count a success; returns True when it closed a half_open breaker."""
        self.failures_in_row = 0
        self._win_total += 1
        if self._win_total >= 4096:
            self._window()
        if self.state != "closed":
            self.state = "closed"
            self.trips_in_row = 0
            self._trial_out = False
            return True
        return False

    def record_failure(self, *, hard: bool = False) -> bool:
        """Count a failure; returns True when the breaker *should* trip now."""
        self._window()
        self.failures_in_row += 1
        self._win_total += 1
        self._win_fail += 1
        if self.state == "half_open":
            return True
        if self.state == "open":
            return False
        if hard or self.failures_in_row >= self.consecutive:
            return True
        return (
            self._win_total >= self.min_requests
            and self._win_fail / self._win_total > self.failure_rate
        )

    def trip(self) -> float:
        """Open the breaker; returns how long it stays open (seconds)."""
        self.trips += 1
        self.trips_in_row += 1
        duration = min(self.base_open_s * self.trips_in_row, self.max_open_s)
        self.state = "open"
        self._trial_out = False
        self.open_until = self._clock() + duration
        self._win_start = self._clock()
        self._win_total = 0
        self._win_fail = 0
        return duration

    def probe_ok(self) -> bool:
        """An active health probe passed; returns True if that moved open -> half_open."""
        if self.state == "open":
            self.state = "half_open"
            self._trial_out = False
            return True
        return False

    def reset(self) -> None:
        """Forget history (a replica was replaced by a fresh process)."""
        self.state = "closed"
        self.failures_in_row = 0
        self.trips_in_row = 0
        self._trial_out = False

    def statistics(self) -> CircuitBreakerStatistics:
        open_for = max(0.0, self.open_until - self._clock()) if self.state == "open" else 0.0
        return CircuitBreakerStatistics(
            state=self.state,
            failures_in_row=self.failures_in_row,
            trips=self.trips,
            trips_in_row=self.trips_in_row,
            open_for_s=open_for,
            window_requests=self._win_total,
            window_failures=self._win_fail,
        )

"""Restart policy: jittered exponential backoff and a restart budget.

Owns: the arithmetic of *when* to restart and *whether* a restart is still allowed.
Pure: both objects take their clock and randomness from the caller.

Must never: sleep, spawn or signal anything; that is ``_supervisor``'s job.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "BudgetStatistics", "RestartBudget"]


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """A restart budget, now."""

    max_restarts: int
    #: the sliding window in seconds, None for a budget over the whole life
    window_s: float | None
    #: restarts counted in the window (or ever)
    used: int
    #: restarts still allowed now
    remaining: int
    #: restarts ever granted
    total: int


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Jittered exponential backoff: ``min(cap, initial * factor**attempt)`` times a
    random factor in ``[1 - jitter, 1]`` (jitter spreads restarts of many replicas so they
    do not stampede a shared resource, the reason stamina and AWS use "full jitter")."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"Backoff(initial={self.initial}, factor={self.factor}, cap={self.cap}, "
                f"jitter={self.jitter}): need initial, cap >= 0, factor >= 1, 0 <= jitter <= 1"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before restart number ``attempt`` (0 = the first restart)."""
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        r = (rng or random).random()
        return base * (1.0 - self.jitter * r)


@dataclass(kw_only=True)
class RestartBudget:
    """At most ``max_restarts`` restarts, optionally per sliding ``window_s`` seconds.

    With no window the budget counts every restart since the child last proved healthy
    (the supervisor calls ``forgive`` after a child ran ``healthy_after_s``): a job that
    crashes at once every time exhausts it and fails clearly instead of looping forever.
    A window suits long-lived replicas: a crash a day should not add up to a failure.
    """

    max_restarts: int
    window_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _times: deque[float] = field(default_factory=deque, init=False, repr=False)
    _total: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"RestartBudget(max_restarts={self.max_restarts}): must be >= 0")

    def _trim(self) -> None:
        if self.window_s is not None:
            horizon = self.clock() - self.window_s
            while self._times and self._times[0] < horizon:
                self._times.popleft()

    @property
    def used(self) -> int:
        self._trim()
        return len(self._times)

    @property
    def remaining(self) -> int:
        return max(0, self.max_restarts - self.used)

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def spend(self) -> bool:
        """Take one restart from the budget; ``False`` (and nothing taken) if none is left."""
        if self.exhausted:
            return False
        self._times.append(self.clock())
        self._total += 1
        return True

    def forgive(self) -> None:
        """Forget the restarts counted so far (a child proved healthy since); ``total``
        keeps counting. systemd's start limit and Kubernetes' CrashLoopBackOff reset the
        same way, so failures spread over a long healthy life never add up to a failure."""
        self._times.clear()

    def preload(self, used: int) -> None:
        """Count ``used`` restarts made by an earlier supervisor (picked up from events)."""
        now = self.clock()
        for _ in range(max(0, used)):
            self._times.append(now)
            self._total += 1

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(
            max_restarts=self.max_restarts,
            window_s=self.window_s,
            used=self.used,
            remaining=self.remaining,
            total=self._total,
        )

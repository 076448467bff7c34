"""Retry budget: retries (and hedges) may add at most ``ratio`` of the request load.

Owns: a token balance. Every original request deposits ``ratio`` tokens (up to ``cap``);
every retry or hedge withdraws one. A small reserve refills at ``min_per_s`` so a quiet
service can still retry its rare failure (Finagle's RetryBudget, gRPC's retry throttling).
So over any period, retries <= ratio * requests + cap + min_per_s * seconds: a retry storm
cannot double the load on a struggling backend.

Must never: block, or read a clock other than the injected one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.resilience._clock import Clock, monotonic

__all__ = ["RetryBudget", "RetryBudgetStatistics"]


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    """A retry budget's account.

    Attributes:
        ratio: tokens each original request deposits (the share of load retries may add).
        balance: tokens in the account now (at most ``cap``), not counting the reserve.
        requests: original requests deposited.
        retries: retries and hedges that got a token (from the balance or the reserve).
        denied: retries and hedges refused for want of a token.
    """

    ratio: float
    balance: float
    requests: int
    retries: int
    denied: int


class RetryBudget:
    __slots__ = (
        "_clock",
        "_reserve",
        "_reserve_at",
        "balance",
        "cap",
        "denied",
        "min_per_s",
        "ratio",
        "requests",
        "withdrawn",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_s: float = 10.0,  # Finagle RetryBudget default: 10 retries/s floor
        cap: float | None = None,
        clock: Clock = monotonic,
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"retry budget ratio must be in [0, 1], got {ratio}")
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.cap = cap if cap is not None else max(10.0, 100.0 * ratio)
        self._clock = clock
        self.balance = 0.0
        self._reserve = min_per_s
        self._reserve_at = clock()
        self.requests = 0
        self.withdrawn = 0
        self.denied = 0

    def deposit(self) -> None:
        """One original request arrived."""
        self.requests += 1
        balance = self.balance + self.ratio
        self.balance = balance if balance < self.cap else self.cap

    def try_withdraw(self) -> bool:
        """May one retry or hedge go out now? Takes a token if so."""
        if self.balance >= 1.0:
            self.balance -= 1.0
            self.withdrawn += 1
            return True
        now = self._clock()
        self._reserve = min(
            self.min_per_s, self._reserve + (now - self._reserve_at) * self.min_per_s
        )
        self._reserve_at = now
        if self._reserve >= 1.0:
            self._reserve -= 1.0
            self.withdrawn += 1
            return True
        self.denied += 1
        return False

    def statistics(self) -> RetryBudgetStatistics:
        return RetryBudgetStatistics(
            ratio=self.ratio,
            balance=self.balance,
            requests=self.requests,
            retries=self.withdrawn,
            denied=self.denied,
        )

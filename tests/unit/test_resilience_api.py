"""Pins the public API of ``bastion.resilience``: a change to it must be deliberate."""

from __future__ import annotations

import bastion.resilience as resilience


def test_public_api_is_pinned() -> None:
    assert sorted(resilience.__all__) == [
        "AdaptiveLimit",
        "AdaptiveLimitStatistics",
        "AdaptiveTimeout",
        "AdaptiveTimeoutStatistics",
        "BreakerState",
        "CircuitBreaker",
        "CircuitBreakerStatistics",
        "Clock",
        "EjectionCap",
        "EjectionCapStatistics",
        "Ewma",
        "EwmaStatistics",
        "HedgeTimer",
        "HedgeTimerStatistics",
        "ManualClock",
        "RetryBudget",
        "RetryBudgetStatistics",
        "monotonic",
    ]
    for name in resilience.__all__:
        assert hasattr(resilience, name), name

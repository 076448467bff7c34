"""Pins the public API of ``bastion.resilience``: a change to it must be deliberate."""

from __future__ import annotations

import bastion.resilience as resilience


def test_public_api_is_pinned() -> None:
    assert sorted(resilience.__all__) == [
        "AdaptiveLimit",
        "BreakerState",
        "CircuitBreaker",
        "Clock",
        "EjectionCap",
        "Ewma",
        "HedgeTimer",
        "ManualClock",
        "RetryBudget",
        "monotonic",
        "parse_hedge",
    ]

"""Unit tests for the pure resilience policies, driven by a manual clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.resilience import (
    AdaptiveLimit,
    CircuitBreaker,
    EjectionCap,
    Ewma,
    HedgeTimer,
    ManualClock,
    RetryBudget,
)


def test_breaker_hard_failure_trips_at_once_then_half_open_trial() -> None:
    clock = ManualClock()
    b = CircuitBreaker(base_open_s=1.0, clock=clock)
    assert b.allow()
    assert b.record_failure(hard=True)
    assert b.trip() == 1.0
    assert b.state == "open"
    assert not b.allow()
    clock.advance(1.0)
    assert b.available()
    assert b.allow()  # the one trial
    assert b.state == "half_open"
    assert not b.allow()  # no second trial while the first is out
    assert b.record_success()
    assert b.state == "closed"
    assert b.statistics().trips == 1


def test_breaker_soft_failures_need_consecutive_errors() -> None:
    b = CircuitBreaker(consecutive=3, min_requests=100, clock=ManualClock())
    assert not b.record_failure()
    assert not b.record_failure()
    b.record_success()  # breaks the run
    assert not b.record_failure()
    assert not b.record_failure()
    assert b.record_failure()


def test_breaker_error_rate_rule() -> None:
    b = CircuitBreaker(consecutive=100, failure_rate=0.5, min_requests=10, clock=ManualClock())
    tripped = False
    for i in range(20):
        tripped = b.record_failure() if i % 3 != 0 else (b.record_success() and False)
        if tripped:
            break
    assert tripped


def test_breaker_backoff_grows_and_caps_and_failed_trial_retrips() -> None:
    clock = ManualClock()
    b = CircuitBreaker(base_open_s=1.0, max_open_s=2.5, clock=clock)
    durations = []
    for _ in range(4):
        b.record_failure(hard=True)
        durations.append(b.trip())
        clock.advance(10)
        assert b.allow()
        assert b.record_failure()  # half_open trial failed -> trip again
    assert durations == [1.0, 2.0, 2.5, 2.5]


def test_breaker_probe_moves_open_to_half_open_early() -> None:
    clock = ManualClock()
    b = CircuitBreaker(base_open_s=30, clock=clock)
    b.trip()
    assert not b.allow()
    assert b.probe_ok()
    assert b.allow()
    b.record_success()
    assert b.state == "closed"


def test_retry_budget_bounds_retries_to_ratio() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, cap=5.0, clock=clock)
    allowed = 0
    for _ in range(1000):
        budget.deposit()
        if budget.try_withdraw():
            allowed += 1
        if budget.try_withdraw():  # a storm: every request wants two retries
            allowed += 1
    assert allowed <= 0.2 * 1000 + 5
    assert allowed >= 0.2 * 1000 - 5
    assert budget.statistics().denied > 0


def test_retry_budget_reserve_refills_with_time() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, min_per_s=2.0, clock=clock)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.advance(0.5)
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=300), st.floats(min_value=0.0, max_value=1.0))
def test_retry_budget_invariant(pattern: list[bool], ratio: float) -> None:
    budget = RetryBudget(ratio=ratio, min_per_s=0.0, cap=3.0, clock=ManualClock())
    retries = 0
    for is_request in pattern:
        if is_request:
            budget.deposit()
        elif budget.try_withdraw():
            retries += 1
    assert retries <= ratio * budget.requests + 3.0 + 1e-9


def _window(lim: AdaptiveLimit, clock: ManualClock, rtt: float) -> None:
    """One window of samples at full concurrency."""
    for _ in range(10):
        while lim.try_acquire():
            pass
        lim.release(rtt)
    clock.advance(0.1)
    while lim.try_acquire():
        pass
    lim.release(rtt)


def test_adaptive_limit_grows_when_fast_and_shrinks_when_queueing() -> None:
    clock = ManualClock()
    lim = AdaptiveLimit(initial=10, min_limit=2, max_limit=100, clock=clock)
    for _ in range(40):
        _window(lim, clock, 0.010)
    grown = lim.limit
    assert grown > 10
    for _ in range(20):
        _window(lim, clock, 0.200)  # latency 20x: the backend is queueing
    assert lim.limit < grown / 2
    before = lim.limit
    lim.release(None, dropped=True)
    clock.advance(0.1)
    lim.release(None, dropped=True)
    assert lim.limit < before
    assert lim.statistics().limit >= 2


def test_adaptive_limit_moves_once_per_window_not_per_sample() -> None:
    clock = ManualClock()
    lim = AdaptiveLimit(initial=100, clock=clock)
    _window(lim, clock, 0.010)
    before = lim.limit
    for _ in range(200):  # a 50x blip inside one window: at most one update
        while lim.try_acquire():
            pass
        lim.release(0.5)
    assert lim.limit == before
    clock.advance(0.1)
    lim.release(0.5)
    assert lim.limit >= before * 0.85  # one smoothed step, not a collapse


def test_adaptive_limit_refuses_above_limit() -> None:
    lim = AdaptiveLimit(initial=2, min_limit=1, clock=ManualClock())
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()
    lim.release(0.01)
    assert lim.try_acquire()


def test_hedge_timer_quantile_and_fixed() -> None:
    timer = HedgeTimer(quantile=0.95, refresh=10, min_samples=20, min_delay_s=0.0)
    assert timer.delay() is None
    for i in range(100):
        timer.observe((i % 100) / 1000)
    d = timer.delay()
    assert d is not None
    assert 0.090 <= d <= 0.099
    assert HedgeTimer(quantile=None, fixed_s=0.05).delay() == 0.05


def test_hedge_timer_floor() -> None:
    timer = HedgeTimer(quantile=0.5, refresh=1, min_samples=1, min_delay_s=0.005)
    timer.observe(0.0001)
    assert timer.delay() == 0.005


def test_ewma_time_decay_and_peak() -> None:
    clock = ManualClock()
    e = Ewma(tau_s=1.0, clock=clock)
    e.update(10.0)
    clock.advance(1.0)
    v = e.update(0.0)
    assert math.isclose(v, 10.0 * math.exp(-1.0))
    p = Ewma(tau_s=1.0, peak=True, clock=clock)
    p.update(1.0)
    assert p.update(50.0) == 50.0  # a slow sample counts at once
    with pytest.raises(ValueError):
        Ewma(tau_s=0)


def test_ejection_cap() -> None:
    cap = EjectionCap(max_fraction=0.5)
    assert cap.try_eject("a", 3)
    assert not cap.try_eject("b", 3)  # floor(1.5) = 1
    assert cap.try_eject("a", 3)  # already ejected: still yes
    cap.restore("a")
    assert cap.try_eject("b", 3)
    assert EjectionCap(max_fraction=0.1).try_eject("x", 2)  # always at least one
    assert cap.statistics().denied == 1
    with pytest.raises(ValueError):
        EjectionCap(max_fraction=0)


def test_statistics_are_frozen_documented_records() -> None:
    import dataclasses

    clock = ManualClock()
    for policy in (
        CircuitBreaker(clock=clock),
        RetryBudget(clock=clock),
        AdaptiveLimit(clock=clock),
        HedgeTimer(),
        Ewma(clock=clock),
        EjectionCap(),
    ):
        stats = policy.statistics()
        assert dataclasses.is_dataclass(stats)
        fields = dataclasses.fields(stats)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(stats, fields[0].name, None)
        doc = type(stats).__doc__ or ""
        for field in fields:
            assert f"{field.name}:" in doc, (type(stats).__name__, field.name)

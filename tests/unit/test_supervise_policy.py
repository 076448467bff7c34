"""Backoff and restart budget: pure arithmetic, with an injected clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.supervise import Backoff, RestartBudget


@given(
    attempt=st.integers(0, 200),
    initial=st.floats(0, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_capped_and_jittered_down_only(
    attempt: int, initial: float, cap: float, jitter: float, seed: int
) -> None:
    b = Backoff(initial=initial, factor=2.0, cap=cap, jitter=jitter)
    d = b.delay(attempt, random.Random(seed))
    base = min(cap, initial * 2.0 ** min(attempt, 64))
    assert base * (1 - jitter) - 1e-9 <= d <= base + 1e-9


def test_backoff_grows_exponentially_without_jitter() -> None:
    b = Backoff(initial=0.5, factor=2.0, cap=3.0, jitter=0.0)
    assert [b.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


def test_budget_without_window_is_for_life() -> None:
    t = [0.0]
    budget = RestartBudget(max_restarts=2, clock=lambda: t[0])
    assert budget.spend()
    t[0] = 1e9
    assert budget.spend()
    assert not budget.spend()
    assert budget.exhausted
    assert budget.statistics().total == 2


def test_budget_window_forgets_old_restarts() -> None:
    t = [0.0]
    budget = RestartBudget(max_restarts=1, window_s=10, clock=lambda: t[0])
    assert budget.spend()
    assert not budget.spend()
    t[0] = 11.0
    assert budget.spend()


def test_budget_preload_counts_earlier_restarts() -> None:
    budget = RestartBudget(max_restarts=3)
    budget.preload(2)
    assert budget.remaining == 1

"""The per-attempt timeout, on a manual clock: an attempt leaves time for those that may
follow it, never outlives the request's deadline, and the last possible one gets all
that is left."""

from __future__ import annotations

import pytest

from bastion.resilience import ManualClock, RetryBudget
from bastion.serve._attempts import AttemptRules
from bastion.serve._outcome import TIMEOUT, Failure
from bastion.serve.metrics import BackendMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec


def _rules(
    tiers: tuple[int, ...], *, max_attempts: int = 3, fixed_s: float | None = None
) -> tuple[AttemptRules, Pool, ManualClock]:
    clock = ManualClock()
    pool = Pool("svc", clock=clock)
    for i, tier in enumerate(tiers):
        spec = UpstreamSpec(name=f"b{i}", url=f"http://127.0.0.1:{9000 + i}", tier=tier)
        pool.add(Upstream(spec, BackendMetrics(), clock))
    budget = RetryBudget(ratio=1.0, min_per_s=0.0, cap=10.0, clock=clock)
    for _ in range(5):
        budget.deposit()
    rules = AttemptRules(
        pool, budget, max_attempts=max_attempts, attempt_timeout_s=fixed_s, clock=clock
    )
    return rules, pool, clock


def test_two_hung_primaries_leave_the_fallback_a_third_of_the_deadline() -> None:
    rules, pool, clock = _rules((0, 0, 1))
    attempts = rules.start(clock() + 1.0)
    ends = []
    for up in attempts:
        assert up is not None
        ends.append(attempts.attempt_deadline() - clock())
        if up.spec.tier == 1:
            break
        clock.advance(ends[-1])  # the hung primary used all of its share
        pool.finish(up, TIMEOUT, ends[-1], reason="timeout")
        attempts.failed(Failure(TIMEOUT, "timeout"))
    assert [u.spec.tier for u in attempts.tried] == [0, 0, 1]
    assert ends == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_a_lone_backend_gets_the_whole_deadline() -> None:
    rules, _, clock = _rules((0,))
    attempts = rules.start(clock() + 2.0)
    assert next(attempts) is not None
    assert attempts.attempt_deadline() == pytest.approx(clock() + 2.0)


def test_the_share_counts_only_attempts_that_can_still_be_made() -> None:
    rules, pool, clock = _rules((0, 0, 0, 0), max_attempts=2)
    attempts = rules.start(clock() + 1.0)
    assert next(attempts) is not None
    assert attempts.attempt_deadline() - clock() == pytest.approx(0.5)  # cap: one more
    rules, pool, clock = _rules((0, 0, 1), max_attempts=3)
    pool.upstreams["b2"].needs_probe = True  # the fallback is out: no time kept for it
    attempts = rules.start(clock() + 1.0)
    assert next(attempts) is not None
    assert attempts.attempt_deadline() - clock() == pytest.approx(0.5)


def test_a_fixed_attempt_timeout_is_bounded_by_the_deadline() -> None:
    rules, _, clock = _rules((0, 0, 1), fixed_s=0.4)
    attempts = rules.start(clock() + 1.0)
    assert next(attempts) is not None
    assert attempts.attempt_deadline() - clock() == pytest.approx(0.4)
    clock.advance(0.8)
    assert attempts.attempt_deadline() == pytest.approx(attempts.deadline)
    clock.advance(1.0)
    assert attempts.attempt_deadline() == attempts.deadline  # passed: never later


def test_a_non_positive_attempt_timeout_is_refused() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="attempt_timeout_s"):
        AttemptRules(
            Pool("svc", clock=clock), RetryBudget(clock=clock), attempt_timeout_s=0, clock=clock
        )

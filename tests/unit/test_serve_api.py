"""The serve package's public API, and its pure parts: autoscaler, admission, pool, the
attempts and the outcome classifier, all driven by a manual clock, no HTTP."""

from __future__ import annotations

import asyncio

import pytest

import bastion.serve as serve
from bastion.events import Relay
from bastion.manifest import GatewayPolicy
from bastion.resilience import ManualClock, RetryBudget
from bastion.serve import Admission, Autoscaler, QueueFull
from bastion.serve._attempts import AttemptRules, Attempts
from bastion.serve._outcome import (
    CANCELLED,
    CLIENT_ERROR,
    CONNECTION,
    CUT,
    DEADLINE,
    MALFORMED,
    OK,
    RATE_LIMITED,
    STALLED,
    STATUS,
    TIMEOUT,
    TTFT_TIMEOUT,
    Failure,
    Outcome,
    classify_answer,
    classify_error,
    classify_status,
)
from bastion.serve.metrics import BackendMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec


def test_public_api_is_pinned() -> None:
    assert sorted(serve.__all__) == sorted(
        [
            "BACKEND_HEADER",
            "DEADLINE_HEADER",
            "GOLDEN_HEADER",
            "PRIORITIES",
            "PRIORITY_HEADER",
            "Admission",
            "AdmissionStatistics",
            "AttemptStatistics",
            "Autoscaler",
            "AutoscalerStatistics",
            "Gateway",
            "GatewayDown",
            "GatewayStatistics",
            "GatewayThread",
            "GoldenCheck",
            "GoldenProber",
            "GoldenSet",
            "GoldenStatistics",
            "Pool",
            "PoolStatistics",
            "QueueFull",
            "ReplicaSet",
            "ReplicaSetStatistics",
            "Upstream",
            "UpstreamSpec",
            "UpstreamStatistics",
            "client_keys",
            "load_golden",
            "run_services",
            "spawn_server",
            "specs_for",
            "status",
            "stop_server",
        ]
    )
    for name in serve.__all__:
        assert hasattr(serve, name), name


def test_autoscaler_up_fast_down_slow_and_bounded() -> None:
    clock = ManualClock()
    a = Autoscaler(
        min_replicas=2,
        max_replicas=5,
        target_per_replica=4,
        cooldown_s=30,
        up_cooldown_s=2,
        clock=clock,
    )
    assert a.decide(1, 0) == 2  # below the floor heals at once
    assert a.decide(2, 50.0) == 5  # up all at once, capped at max
    assert a.decide(5, 0.0) == 5  # down waits for the long cool-down
    clock.advance(30)
    assert a.decide(5, 0.0) == 4  # then one at a time
    assert a.decide(4, 0.0) == 4
    clock.advance(2)
    assert a.decide(4, 19.5) == 5  # up again after the short cool-down
    clock.advance(30)
    assert a.decide(5, 16.0) == 4
    assert a.statistics().decisions == 4


def _pool(n: int, tiers: tuple[int, ...] = (), clock: ManualClock | None = None) -> Pool:
    clock = clock or ManualClock()
    pool = Pool("svc", clock=clock)
    for i in range(n):
        spec = UpstreamSpec(
            name=f"b{i}", url=f"http://127.0.0.1:{9000 + i}", tier=tiers[i] if tiers else 0
        )
        pool.add(Upstream(spec, BackendMetrics(), clock))
    return pool


def test_pick_never_returns_a_tried_backend_and_falls_back_by_tier() -> None:
    pool = _pool(3, tiers=(0, 0, 1))
    b0, b1, b2 = (pool.upstreams[f"b{i}"] for i in range(3))
    for _ in range(50):
        assert pool.pick((b0,)) is b1
    assert pool.pick((b0, b1)) is b2
    assert pool.pick((b0, b1, b2)) is None


def _attempt(pool: Pool, up: Upstream, outcome: Outcome, elapsed: float = 0.01) -> None:
    up.begin()
    pool.finish(up, outcome, elapsed, reason=outcome.kind)


def test_hard_failure_ejects_at_once_and_cap_limits_soft_ejections() -> None:
    pool = _pool(4)
    ups = list(pool.upstreams.values())
    _attempt(pool, ups[0], CONNECTION)
    assert ups[0].breaker.state == "open"
    for up in ups[1:]:
        for _ in range(5):
            _attempt(pool, up, STATUS)
    # cap 50% of 4 = 2 soft ejections; the hard one does not count against the cap.
    assert sum(u.breaker.state == "open" for u in ups[1:]) == 2
    assert pool.cap.denied >= 1


def test_admission_priorities_and_bound() -> None:
    async def go() -> None:
        adm = Admission(max_queue=10)
        waiters = [asyncio.ensure_future(adm.wait(2, 1.0)) for _ in range(5)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await adm.wait(2, 1.0)  # low may use only half the queue
        high = asyncio.ensure_future(adm.wait(0, 1.0))
        await asyncio.sleep(0)
        adm.wake(1)
        assert await high is True  # best priority first
        adm.wake_all()
        assert all(await asyncio.gather(*waiters))
        assert await adm.wait(1, 0.01) is False  # nobody wakes it: deadline
        assert adm.statistics().peak == 6

    asyncio.run(go())


def test_backend_json_check_small_parsed_big_structural() -> None:
    from bastion.serve._outcome import looks_like_json as _looks_like_json

    assert _looks_like_json(b'{"a": 1}')
    assert not _looks_like_json(b'{"a": ')
    assert not _looks_like_json(b"[" * 100_000)
    big = b'{"data": [' + b"0.5, " * 20_000 + b"0.5]}"
    assert _looks_like_json(big)
    assert not _looks_like_json(big[: len(big) // 2])


def test_metrics_histogram_is_le_cumulative_and_exported() -> None:
    from bastion.serve.metrics import GatewayMetrics, Histogram

    h = Histogram()
    for v in (0.001, 0.0011, 0.5, 99.0):
        h.observe(v)
    cum = dict(h.cumulative())
    assert cum["0.001"] == 1.0  # le: a value on the bound counts in that bucket
    assert cum["0.0025"] == 2.0
    assert cum["0.5"] == 3.0
    assert cum["+Inf"] == 4.0
    gm = GatewayMetrics("svc")
    pool = _pool(1)
    up = pool.upstreams["b0"]
    m = up.metrics
    for _ in range(3):
        _attempt(pool, up, CONNECTION)  # the first trips the breaker open
    gm.watch(lambda: [("b", m, up.statistics())])
    gm.shed["saturated"].inc()
    get = gm.registry.get_sample_value
    assert get("bastion_gateway_backend_requests_total", {"service": "svc", "backend": "b"}) == 3
    assert get("bastion_gateway_breaker_state", {"service": "svc", "backend": "b"}) == 2.0
    assert get("bastion_gateway_shed_total", {"service": "svc", "reason": "saturated"}) == 1.0


# -- one attempt: Upstream.begin / finish, Pool.finish ------------------------------------


def test_begin_finish_settles_an_attempt_with_a_manual_clock() -> None:
    clock = ManualClock()
    pool = _pool(1, clock=clock)
    up = pool.upstreams["b0"]
    start = up.begin()
    assert start == clock()
    assert (up.outstanding, up.limit.inflight, up.last_sent) == (1, 1, start)
    clock.advance(0.020)
    pool.finish(up, OK, clock() - start)
    assert (up.outstanding, up.limit.inflight) == (0, 0)
    assert up.latency.value == pytest.approx(0.020)  # the first sample is taken as is
    assert up.metrics.requests.value == 1
    assert up.metrics.errors.value == 0
    assert sum(up.metrics.latency.counts) == 1
    # A fast failure is a slow sample (peak EWMA takes it at once), and an error.
    _attempt(pool, up, STATUS, elapsed=0.001)
    assert up.latency.value == pytest.approx(0.080)
    assert up.metrics.errors.value == 1
    assert up.breaker.failures_in_row == 1
    assert up.breaker.state == "closed"  # one soft failure does not eject
    # A cancelled attempt (a lost hedge race) says only "at least this slow".
    _attempt(pool, up, CANCELLED, elapsed=0.001)
    assert up.latency.value == pytest.approx(0.080)
    _attempt(pool, up, CANCELLED, elapsed=0.5)
    assert up.latency.value == pytest.approx(0.5)
    assert up.metrics.errors.value == 1
    # The client's own error is not the backend's: it clears the failure count.
    _attempt(pool, up, CLIENT_ERROR)
    assert up.breaker.failures_in_row == 0
    assert (up.outstanding, up.limit.inflight) == (0, 0)


def test_pool_finish_ejects_holds_and_restores_with_events() -> None:
    clock = ManualClock()
    events: list[tuple[str, dict[str, object]]] = []
    pool = Pool(
        "svc", clock=clock, events=Relay(lambda kind, _s, _at, data: events.append((kind, data)))
    )
    for i in range(2):
        pool.add(Upstream(UpstreamSpec(name=f"b{i}", url="http://x"), BackendMetrics(), clock))
    a, b = pool.upstreams["b0"], pool.upstreams["b1"]
    b.begin()
    pool.finish(b, RATE_LIMITED, 0.01, reason="rate limited (429)", hold_s=3.0)
    assert not b.routable()
    clock.advance(2.9)
    assert not b.routable()
    clock.advance(0.2)
    assert b.routable()  # the hold was exactly what Retry-After asked for
    _attempt(pool, a, TIMEOUT)
    assert a.needs_probe  # a hard failure waits for an active probe, not a trial
    assert pool.pick() is b
    _attempt(pool, b, STATUS)  # the trial after the hold failed: out again, for longer
    assert b.breaker.state == "open"
    assert pool.pick() is None
    clock.advance(b.breaker.open_until - clock())
    assert pool.pick() is b
    b.begin()  # the one half_open trial is out: nobody else is sent there meanwhile
    assert pool.pick() is None
    pool.finish(b, OK, 0.01)
    assert b.breaker.state == "closed"
    assert pool.pick() is b
    kinds = [(k, d["backend"]) for k, d in events]
    assert kinds == [
        ("serve.backend.ejected", "b1"),
        ("serve.backend.ejected", "b0"),
        ("serve.backend.ejected", "b1"),
        ("serve.backend.restored", "b1"),
    ]
    assert events[-1][1]["via"] == "trial"


# -- the attempts ------------------------------------------------------------------------


def _rules(
    n: int, *, max_attempts: int = 3, ratio: float = 0.0
) -> tuple[AttemptRules, ManualClock]:
    clock = ManualClock()
    pool = _pool(n, clock=clock)
    budget = RetryBudget(ratio=ratio, min_per_s=0.0, cap=10.0, clock=clock)
    return AttemptRules(pool, budget, max_attempts=max_attempts, clock=clock), clock


def test_attempts_never_repeat_a_backend_and_stop_at_max_attempts() -> None:
    rules, clock = _rules(5, max_attempts=3)
    attempts = rules.start(clock() + 10)
    seen = []
    for up in attempts:
        assert up is not None
        seen.append(up)
        attempts.failed(Failure(CONNECTION, "refused"))  # requeues: no budget needed
    assert len(seen) == 3
    assert len(set(seen)) == 3
    assert attempts.tried == tuple(seen)
    assert rules.statistics().requeues == 2
    assert rules.statistics().retries == 0


def test_attempts_spend_the_budget_after_an_overload_failure() -> None:
    rules, clock = _rules(3, ratio=0.0)  # an empty budget and no reserve
    attempts = rules.start(clock() + 10)
    first = next(attempts)
    assert first is not None
    attempts.failed(Failure(STATUS, "status 503"))
    with pytest.raises(StopIteration):
        next(attempts)  # a 5xx may mean overload: no token, no retry
    assert attempts.last is not None
    assert attempts.last.reason == "status 503"
    assert rules.budget.statistics().denied == 1
    rules.budget.balance = 1.0
    attempts = rules.start(clock() + 10)
    next(attempts)
    attempts.failed(Failure(TIMEOUT, "timeout"))
    assert next(attempts) is not None  # the token pays for it
    assert rules.statistics().retries == 1


def test_attempts_stop_at_the_deadline_and_wait_when_no_backend_has_room() -> None:
    rules, clock = _rules(2)
    attempts = rules.start(clock() + 1.0)
    assert attempts.remaining() == pytest.approx(1.0)
    ups = list(rules.pool.upstreams.values())
    for up in ups:
        up.limit.limit = 1
        up.begin()  # both full
    assert next(attempts) is None  # no room now: wait for capacity, then ask again
    rules.pool.finish(ups[0], OK, 0.01)
    assert next(attempts) is ups[0]
    clock.advance(1.0)
    assert attempts.expired
    with pytest.raises(StopIteration):
        next(attempts)


def test_a_hedge_is_spent_only_when_it_goes_out_and_counts_as_tried() -> None:
    rules, clock = _rules(2, max_attempts=3)
    rules.budget.balance = 5.0
    attempts = rules.start(clock() + 10, hedge=True)
    first = next(attempts)
    assert attempts.hedges_left == 1
    other = rules.pool.upstreams["b1" if first is rules.pool.upstreams["b0"] else "b0"]
    other.limit.limit = 0  # the only other backend is full: the hedge cannot go
    assert attempts.hedge() is None
    assert attempts.hedges_left == 1  # not spent
    other.limit.limit = 8
    assert attempts.hedge() is other
    assert attempts.hedges_left == 0
    assert attempts.hedge() is None  # one hedge per request
    assert attempts.tried == (first, other)
    assert rules.statistics().hedges == 1
    assert other.metrics.hedges.value == 1
    assert rules.start(clock() + 10).hedge() is None  # a request that may not hedge


# -- the outcome classifier ----------------------------------------------------------------


def test_one_classifier_for_answers_first_bytes_and_relays() -> None:
    import aiohttp

    refused = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)
    assert classify_error(TimeoutError(), "answer") is TIMEOUT
    assert classify_error(TimeoutError(), "first_byte") is TTFT_TIMEOUT
    assert classify_error(TimeoutError(), "relay") is STALLED
    assert classify_error(TimeoutError(), "relay", expired=True) is DEADLINE
    assert classify_error(refused, "answer") is CONNECTION
    assert classify_error(ConnectionResetError(), "first_byte") is CONNECTION
    assert classify_error(aiohttp.ClientPayloadError("cut"), "relay") is CUT
    assert classify_error(asyncio.CancelledError(), "answer") is CANCELLED
    assert [classify_status(s) for s in (200, 400, 404, 408, 429, 500, 503)] == [
        OK,
        CLIENT_ERROR,
        CLIENT_ERROR,
        STATUS,
        RATE_LIMITED,
        STATUS,
        STATUS,
    ]
    assert classify_answer(200, "application/json", b'{"a": ') is MALFORMED
    assert classify_answer(200, "application/json", b'{"a": 1}') is OK
    assert classify_answer(200, "text/plain", b"not json") is OK
    # What each means, decided once: a refusal is requeued free, overload spends the
    # budget, bytes already sent can never be retried.
    assert CONNECTION.retry == "requeue"
    assert {o.retry for o in (TIMEOUT, TTFT_TIMEOUT, STATUS, RATE_LIMITED, MALFORMED)} == {"budget"}
    assert {o.retry for o in (CUT, STALLED, DEADLINE)} == {"never"}
    assert (TIMEOUT.status, STATUS.status, RATE_LIMITED.status) == (504, 502, 429)


def test_policy_max_attempts_and_the_hedge_grammar_parsed_once() -> None:
    from pydantic import ValidationError

    assert GatewayPolicy().max_attempts == 3
    assert GatewayPolicy(hedge="off").hedge_rule == (None, None)
    assert GatewayPolicy(hedge="p99").hedge_rule == (0.99, None)
    assert GatewayPolicy(hedge="25ms").hedge_rule == (None, 0.025)
    for bad in ({"hedge": "soon"}, {"hedge": "p42"}, {"max_attempts": 0}):
        with pytest.raises(ValidationError):
            GatewayPolicy(**bad)  # type: ignore[arg-type]


def test_the_gateway_runs_on_an_injected_clock() -> None:
    from bastion.serve import Gateway

    clock = ManualClock()
    gw = Gateway("svc", GatewayPolicy(max_attempts=2, retry_budget=0.5), clock=clock)
    up = gw.add_upstream(UpstreamSpec(name="b", url="http://127.0.0.1:9"))
    attempts = gw.attempts.start(clock() + 0.5)
    assert next(attempts) is up
    up.begin()
    clock.advance(0.25)
    gw.pool.finish(up, TIMEOUT, 0.25, reason="timeout")
    assert up.breaker.statistics().open_for_s == pytest.approx(1.0)  # the gateway's clock
    clock.advance(0.25)
    assert attempts.expired
    stats = gw.statistics()
    assert stats.attempts.max_attempts == 2
    assert stats.retry_budget.requests == 1
    assert stats.pool.upstreams[0].needs_probe


# -- hedged attempts: re-routing at once --------------------------------------------------


def _hedged_request(n: int = 3) -> tuple[AttemptRules, Attempts, Upstream]:
    """A request that may hedge, over ``n`` backends, with budget to spare, and its first
    backend."""
    rules, clock = _rules(n, max_attempts=3)
    rules.budget.balance = 5.0
    attempts = rules.start(clock() + 10, hedge=True)
    first = next(attempts)
    assert first is not None
    return rules, attempts, first


def test_a_refused_hedge_is_re_routed_at_once_not_left_on_the_hung_attempt() -> None:
    from bastion.serve._race import hedged

    async def go() -> None:
        rules, attempts, first = _hedged_request()
        calls: list[Upstream] = []
        cancelled: list[Upstream] = []

        async def run(up: Upstream) -> str:
            calls.append(up)
            if len(calls) == 1:  # the inline attempt: a hung replica
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.append(up)
                    raise
            if len(calls) == 2:  # the hedge: a replica killed a moment ago
                raise Failure(CONNECTION, "connection: ClientConnectorError")
            return up.name

        assert await hedged(first, attempts, run, 0.0) == calls[2].name
        assert len(set(calls)) == 3
        assert cancelled == [first]  # the hung attempt was let go, not waited out
        assert rules.statistics().hedges == 1
        assert rules.statistics().requeues == 1  # the refusal cost no budget token

    asyncio.run(go())


def test_an_inline_attempt_that_fails_while_its_hedge_hangs_is_re_routed_at_once() -> None:
    from bastion.serve._race import hedged

    async def go() -> None:
        _, attempts, first = _hedged_request()
        hedge_out = asyncio.Event()
        calls: list[Upstream] = []

        async def run(up: Upstream) -> str:
            calls.append(up)
            if len(calls) == 1:  # inline: reset once the hedge is out (killed mid-request)
                await hedge_out.wait()
                raise Failure(CONNECTION, "connection: ServerDisconnectedError")
            if len(calls) == 2:  # the hedge: a hung replica
                hedge_out.set()
                await asyncio.Event().wait()
            return up.name

        assert await hedged(first, attempts, run, 0.0) == calls[2].name
        assert attempts.tried == tuple(calls)

    asyncio.run(go())


def test_every_hedged_attempt_failing_raises_the_last_failure() -> None:
    from bastion.serve._race import hedged

    async def go() -> None:
        _, attempts, first = _hedged_request(2)
        hedge_out = asyncio.Event()

        async def run(up: Upstream) -> str:
            if up is first:
                await hedge_out.wait()
                raise Failure(STATUS, "status 503")
            hedge_out.set()
            raise Failure(STATUS, "status 502")

        with pytest.raises(Failure) as caught:
            await hedged(first, attempts, run, 0.0)
        assert caught.value.reason in ("status 502", "status 503")
        assert len(attempts.tried) == 2  # no third backend to go to

    asyncio.run(go())


def test_a_success_that_lost_the_race_is_discarded_not_leaked() -> None:
    from bastion.serve._race import hedged

    async def go() -> None:
        _, attempts, first = _hedged_request(2)
        hedge_out = asyncio.Event()
        discarded: list[str] = []

        async def run(up: Upstream) -> str:
            if up is first:
                await hedge_out.wait()  # both answer in the same loop turn
                return up.name
            hedge_out.set()
            return up.name

        won = await hedged(first, attempts, run, 0.0, discarded.append)
        await asyncio.sleep(0)  # let the losing task's done callback run
        assert sorted([won, *discarded]) == sorted(u.name for u in attempts.tried)
        assert len(discarded) == 1

    asyncio.run(go())


def test_adaptive_ttft_timeout_follows_observed_ttft_within_its_cap() -> None:
    from bastion.resilience import AdaptiveTimeout

    timeout = AdaptiveTimeout(cap_s=0.75, quantile=0.99, factor=4.0, floor_s=0.25, refresh=10)
    assert timeout.timeout() == 0.75  # cold: the cap, a quarter of a 3 s deadline
    for i in range(100):
        timeout.observe(0.300 + i * 0.0001)
    assert timeout.timeout() == 0.75  # 4 x p99 (~1.2 s) would pass the cap
    fast = AdaptiveTimeout(cap_s=0.75, refresh=10)
    for _ in range(100):
        fast.observe(0.002)
    assert fast.timeout() == 0.25  # 4 x 2 ms is noise: the floor
    mid = AdaptiveTimeout(cap_s=2.0, floor_s=0.1, refresh=10)
    for _ in range(100):
        mid.observe(0.1)
    assert mid.timeout() == pytest.approx(0.4)
    assert mid.statistics().observed_s == pytest.approx(0.1)


def test_a_hedge_with_nowhere_to_go_looks_again_later_instead_of_giving_up() -> None:
    from bastion.serve._race import Race

    async def go() -> None:
        rules, attempts, first = _hedged_request(2)
        other = next(u for u in rules.pool.upstreams.values() if u is not first)
        other.limit.limit = 0  # busy: the hedge cannot go now

        async def run(up: Upstream) -> str:
            return up.name

        race = Race(attempts, run, 0.004)
        armed = race.timer.when()
        race.fire()  # what the timer does
        assert race.tasks is None
        assert attempts.hedges_left == 1  # not spent
        assert race.timer.when() > armed  # looks again, twice the delay later
        other.limit.limit = 8
        race.fire()
        assert race.tasks is not None
        assert len(race.tasks) == 1
        assert attempts.tried == (first, other)
        race.timer.cancel()
        race.drop()
        await asyncio.gather(*race.tasks, return_exceptions=True)

    asyncio.run(go())

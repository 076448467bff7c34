"""The serve package's public API, and its pure parts: autoscaler, admission, pool."""

from __future__ import annotations

import asyncio

import pytest

import bastion.serve as serve
from bastion.resilience import ManualClock
from bastion.serve import Admission, Autoscaler, QueueFull
from bastion.serve.metrics import BackendMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec


def test_public_api_is_pinned() -> None:
    assert sorted(serve.__all__) == sorted(
        [
            "BACKEND_HEADER",
            "DEADLINE_HEADER",
            "PRIORITIES",
            "PRIORITY_HEADER",
            "Admission",
            "Autoscaler",
            "EventSink",
            "Gateway",
            "GatewayThread",
            "Pool",
            "QueueFull",
            "ReplicaSet",
            "Upstream",
            "UpstreamSpec",
            "run_services",
            "spawn_server",
            "specs_for",
            "status",
            "stop_server",
        ]
    )


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
    assert a.statistics()["decisions"] == 4


def _pool(n: int, tiers: tuple[int, ...] = ()) -> Pool:
    clock = ManualClock()
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


def test_hard_failure_ejects_at_once_and_cap_limits_soft_ejections() -> None:
    pool = _pool(4)
    ups = list(pool.upstreams.values())
    pool.fail(ups[0], hard=True, reason="refused")
    assert ups[0].breaker.state == "open"
    for up in ups[1:]:
        for _ in range(5):
            pool.fail(up, hard=False, reason="500")
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
        assert adm.statistics()["peak"] == 6

    asyncio.run(go())


def test_backend_json_check_small_parsed_big_structural() -> None:
    from bastion.serve.gateway import _looks_like_json

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
    m = BackendMetrics()
    m.requests.inc(3)
    gm.watch(
        lambda: [("b", m, {"breaker": {"state": "open"}, "limit": {"limit": 8.0, "inflight": 2}})]
    )
    gm.shed["saturated"].inc()
    get = gm.registry.get_sample_value
    assert get("bastion_gateway_backend_requests_total", {"service": "svc", "backend": "b"}) == 3
    assert get("bastion_gateway_breaker_state", {"service": "svc", "backend": "b"}) == 2.0
    assert get("bastion_gateway_shed_total", {"service": "svc", "reason": "saturated"}) == 1.0

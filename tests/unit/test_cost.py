"""The cost ledger, pure: prices in exact units, spend that adds up over causes, budgets
whose reservations never let a hard limit be passed, windows that slide, usage read or
estimated (issue 20)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.manifest import Budget, Price
from bastion.resilience import ManualClock
from bastion.serve._cost import (
    CAUSES,
    OVER_BUDGET,
    PICO,
    Charge,
    Ledger,
    Rate,
    Window,
    cause_of,
    estimate_tokens,
    key_id,
    read_usage,
)
from bastion.serve._outcome import Failure
from bastion.serve.metrics import BackendMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec

PRICES = {
    "pricey": Rate.of(Price(input_per_1k=0.01, output_per_1k=0.03)),
    "cheap": Rate.of(Price(input_per_1k=0.0005, output_per_1k=0.0015, per_request=0.0001)),
    "local": Rate.of(None),
}


def _pool(clock: ManualClock) -> tuple[Pool, dict[str, Upstream]]:
    pool = Pool("svc", clock=clock)
    ups = {}
    for tier, name in enumerate(("pricey", "cheap", "local")):
        up = Upstream(
            UpstreamSpec(name=name, url=f"http://127.0.0.1:1/{name}", group=name, tier=tier),
            BackendMetrics(),
            clock,
        )
        pool.add(up)
        ups[name] = up
    return pool, ups


def test_a_price_is_exact_in_pico_units() -> None:
    rate = Rate.of(Price(input_per_1k=0.00015, output_per_1k=0.0006, per_request=0.002))
    assert rate.input_per_token == 150_000
    assert rate.output_per_token == 600_000
    assert rate.per_request == 2 * 10**9
    # 1000 input and 1000 output tokens cost the two prices per 1k, plus the request
    assert rate.cost(1000, 1000) == round((0.00015 + 0.0006 + 0.002) * PICO)
    assert Rate.of(None).free
    assert Rate.of(None).cost(10**6, 10**6) == 0


def test_usage_is_read_from_an_answer_or_is_none() -> None:
    body = (
        b'{"id": "x", "choices": [], "usage": {"prompt_tokens": 12, '
        b'"completion_tokens": 7, "total_tokens": 19}}'
    )
    assert read_usage(body) == (12, 7)
    assert read_usage(b'{"usage":{"prompt_tokens":3,"total_tokens":3}}') == (3, 0)  # embeddings
    assert read_usage(b'{"id": "x", "choices": []}') is None
    assert read_usage(b'{"usage": null}') is None
    assert estimate_tokens(0) == 1
    assert estimate_tokens(400) == 100


def test_a_key_is_named_by_a_digest_never_itself() -> None:
    named = key_id("Bearer sk-client-secret-123")
    assert named.startswith("key-")
    assert len(named) == 12
    assert "secret" not in named
    assert key_id("Bearer sk-client-secret-123") == named
    assert key_id(None) == ""


@pytest.mark.parametrize(
    ("index", "tier", "first_tier", "hedge", "cause"),
    [
        (0, 0, 0, False, "first"),
        (0, 1, 1, False, "first"),
        (1, 0, 0, False, "retry"),
        (1, 0, 0, True, "hedge"),
        (2, 1, 0, False, "fallback"),
        (2, 1, 0, True, "hedge"),
    ],
)
def test_the_cause_of_an_attempt(
    index: int, tier: int, first_tier: int, hedge: bool, cause: str
) -> None:
    assert cause_of(index, tier, first_tier, hedge=hedge) == cause


def test_a_window_slides_in_sixty_steps() -> None:
    clock = ManualClock(0.0)
    window = Window(60.0, clock=clock)
    window.add(5)
    clock.advance(30)
    window.add(7)
    assert window.spent() == 12
    clock.advance(31)  # the first amount's step has left the window
    assert window.spent() == 7
    clock.advance(30)
    assert window.spent() == 0
    with pytest.raises(ValueError, match="positive"):
        Window(0.0)


_SETTLED = st.lists(
    st.tuples(
        st.sampled_from(sorted(PRICES)),
        st.sampled_from(CAUSES),
        st.integers(0, 50_000),
        st.integers(0, 50_000),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_SETTLED)
def test_spend_adds_up_over_causes_backends_and_rows(
    attempts: list[tuple[str, str, int, int, bool]],
) -> None:
    clock = ManualClock()
    charges: list[Charge] = []
    ledger = Ledger("svc", PRICES, sink=charges.append, clock=clock)
    pool, ups = _pool(clock)
    bill = ledger.bill({"max_tokens": 10}, 100, None, pool)
    expected = 0
    for backend, cause, tokens_in, tokens_out, answered in attempts:
        ticket = ledger.reserve(bill, ups[backend], cause)  # type: ignore[arg-type]
        tokens = (tokens_in, tokens_out) if answered else None
        ledger.settle(bill, ticket, tokens, estimated=False)
        expected += PRICES[backend].cost(tokens_in, tokens_out) if answered else 0
    stats = ledger.statistics()
    by_cause_pico = dict.fromkeys(CAUSES, 0)
    for (_, cause), row in ledger.counts.items():
        by_cause_pico[cause] += row[0]
    assert sum(by_cause_pico.values()) == ledger.total() == expected
    assert sum(c.cost for c in charges) == expected
    assert len(charges) == len(attempts)
    assert sum(stats.by_cause.values()) == pytest.approx(stats.total)
    assert set(stats.by_cause) == set(CAUSES)


@settings(max_examples=300, deadline=None)
@given(
    hard=st.integers(1, 200),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "settle", "tick"]),
            st.sampled_from(["pricey", "cheap"]),
            st.integers(1, 400),  # max_tokens of the request
            st.floats(0.0, 1.0),  # share of max_tokens actually used
        ),
        max_size=80,
    ),
)
def test_reservations_never_let_a_hard_budget_be_exceeded(
    hard: int, steps: list[tuple[str, str, int, float]]
) -> None:
    """Attempts reserve before they are sent and settle later, in any interleaving; the
    spend in the window never passes the hard limit, nor does spend plus reservations."""
    clock = ManualClock()
    limit = hard / 10_000
    budget = Budget(scope="service", hard=limit, window="1h")
    ledger = Ledger("svc", PRICES, budgets=[budget], clock=clock)
    pool, ups = _pool(clock)
    (account,) = ledger._service_accounts
    in_flight = []
    for op, backend, max_tokens, share in steps:
        if op == "reserve":
            bill = ledger.bill({"max_tokens": max_tokens}, 40, None, pool)
            try:
                ticket = ledger.reserve(bill, ups[backend], "first")
            except Failure as failure:
                assert failure.outcome is OVER_BUDGET
                continue
            in_flight.append((bill, ticket, max_tokens, share))
        elif op == "settle" and in_flight:
            paid, ticket, asked, used = in_flight.pop(0)
            # an answer never uses more than it asked for, nor more input than its bytes
            ledger.settle(paid, ticket, (40, int(asked * used)), estimated=False)
        elif op == "tick":
            clock.advance(90.0)
        assert account.window.spent() + account.reserved <= account.hard
        assert account.reserved >= 0
    for bill, ticket, max_tokens, _ in in_flight:
        ledger.settle(bill, ticket, (40, max_tokens), estimated=False)
    assert account.reserved == 0
    assert account.window.spent() <= account.hard


def test_a_bill_skips_what_it_cannot_afford_and_hedges_until_the_soft_limit() -> None:
    clock = ManualClock()
    events: list[tuple[str, dict[str, object]]] = []
    budget = Budget(scope="vendor", vendor="pricey", soft=0.002, hard=0.004, window="1d")
    ledger = Ledger("svc", PRICES, budgets=[budget], vendor={n: n for n in PRICES}, clock=clock)
    ledger.record = lambda kind, **data: events.append((kind, data))
    pool, ups = _pool(clock)
    bill = ledger.bill({"max_tokens": 50}, 40, None, pool)
    assert bill.hedge
    assert bill.skip == ()
    assert not bill.nowhere
    ticket = ledger.reserve(bill, ups["pricey"], "first")
    ledger.settle(bill, ticket, (40, 50), estimated=False)  # 0.0004 + 0.0015 = 0.0019
    ticket = ledger.reserve(bill, ups["pricey"], "first")
    ledger.settle(bill, ticket, (40, 50), estimated=False)  # 0.0038: past soft
    bill = ledger.bill({"max_tokens": 50}, 40, None, pool)
    assert not bill.hedge
    assert not bill.shadow
    assert bill.skip == (ups["pricey"],)  # 0.0019 more would pass 0.004: cheaper tiers only
    # the soft limit, then the hard one, each an event once
    assert [k for k, _ in events] == ["cost.budget.soft_limit", "cost.budget.hard_limit"]
    assert not bill.nowhere
    with pytest.raises(Failure) as info:
        ledger.reserve(bill, ups["pricey"], "first")
    assert "vendor:pricey/1d" in info.value.reason
    assert len(events) == 2  # no second event within the same crossing
    # the cheap vendor has no budget of its own: it still takes the request
    ledger.settle(bill, ledger.reserve(bill, ups["cheap"], "fallback"), (1, 1), estimated=False)
    clock.advance(86400 + 1)  # the window slid past the spend
    bill = ledger.bill({"max_tokens": 50}, 40, None, pool)
    assert bill.hedge
    assert bill.skip == ()


def test_a_ledger_seeds_its_windows_with_spend_from_before_a_restart() -> None:
    clock = ManualClock()
    budget = Budget(scope="service", hard=1.0, window="1h")
    ledger = Ledger("svc", PRICES, budgets=[budget], clock=clock)
    ledger.seed([(7200.0, "pricey", "", PICO), (600.0, "pricey", "", PICO // 2)])
    (account,) = ledger._service_accounts
    assert account.window.spent() == PICO // 2  # the older row is out of the window
    assert ledger.longest_window_s == 3600.0


def test_cost_aware_routing_prefers_the_cheaper_backend_while_scores_are_close() -> None:
    from bastion.serve._cost import weigh

    clock = ManualClock()
    pool = Pool("svc", clock=clock)
    ups = {}
    for name in ("pricey", "cheap"):
        ups[name] = up = Upstream(
            UpstreamSpec(name=name, url=f"http://127.0.0.1:1/{name}", group=name, tier=0),
            BackendMetrics(),
            clock,
        )
        pool.add(up)
    weigh(pool, Ledger("svc", PRICES), 0.2)
    assert ups["pricey"].weight == pytest.approx(1.2)
    assert ups["cheap"].weight == 1.0
    ups["pricey"].latency.update(0.100)
    ups["cheap"].latency.update(0.115)  # 15 % slower: within the margin, still preferred
    assert {pool.pick().name for _ in range(50)} == {"cheap"}  # type: ignore[union-attr]
    ups["cheap"].latency.update(0.200)  # twice as slow: latency wins over price
    assert {pool.pick().name for _ in range(50)} == {"pricey"}  # type: ignore[union-attr]
    weigh(pool, Ledger("svc", PRICES), 0.0)  # off: latency alone
    assert ups["pricey"].weight == ups["cheap"].weight == 1.0


def test_a_paid_probe_is_charged_as_a_probe_and_never_refused() -> None:
    clock = ManualClock()
    budget = Budget(scope="service", hard=0.000001, window="1h")  # already too small
    ledger = Ledger("svc", PRICES, budgets=[budget], clock=clock)
    _, ups = _pool(clock)
    answer = b'{"usage": {"prompt_tokens": 100, "completion_tokens": 10}}'
    ledger.probe(ups["pricey"], 400, 200, answer)
    ledger.probe(ups["pricey"], 400, 200, b'{"predictions": [1, 2]}')  # no usage: estimated
    ledger.probe(ups["pricey"], 400, 503, b"")  # failed: nothing
    ledger.probe(ups["local"], 400, 200, answer)  # free: not accounted
    row = ledger.counts["pricey", "probe"]
    assert row[3] == 3
    assert row[4] == 1
    assert row[0] == PRICES["pricey"].cost(100, 10) + PRICES["pricey"].cost(100, 6)
    assert ("local", "probe") not in ledger.counts
    (account,) = ledger._service_accounts
    assert account.window.spent() == row[0]  # counted in the window, though over the limit
    assert account.reserved == 0


def test_an_attempt_says_its_cause_and_a_shadow_one_is_its_own() -> None:
    from bastion.resilience import RetryBudget
    from bastion.serve._attempts import AttemptRules

    clock = ManualClock()
    ledger = Ledger("svc", PRICES, clock=clock)
    pool, ups = _pool(clock)
    rules = AttemptRules(pool, RetryBudget(ratio=1.0, clock=clock), clock=clock)
    attempts = rules.start(clock() + 10, hedge=True)
    bill = ledger.bill({}, 40, None, pool)
    body = b'{"usage": {"prompt_tokens": 8, "completion_tokens": 5}}'

    # as the gateway's attempt does: reserve as the attempt's cause, settle with the answer
    first = next(attempts)
    assert first is ups["pricey"]
    ledger.reserve(bill, first, bill.cause(first, attempts)).answered(200, body)
    hedge = attempts.hedge()
    assert hedge is ups["cheap"]
    ledger.reserve(bill, hedge, bill.cause(hedge, attempts)).answered(200, body)
    ledger.reserve(bill, ups["local"], "shadow").answered(200, body)
    assert set(ledger.counts) == {("pricey", "first"), ("cheap", "hedge"), ("local", "shadow")}

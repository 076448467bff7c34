"""Cost as a resilience risk: what each attempt costs, why it was made, and budgets that
hold before the money is spent.

Owns: ``Rate`` (a manifest ``Price`` in whole pico-units, so sums are exact), the causes
of an attempt (``CAUSES``: first, retry, hedge, fallback, shadow, probe), reading or
estimating an answer's tokens (``read_usage``, ``estimate_tokens``), ``Window`` (spend
over a sliding window in 60 steps), ``Account`` (one budget's spend, reservations and
limits), ``Ledger`` (one gateway's prices, budgets and counters; it makes a ``Bill`` per
request and a ``Ticket`` per attempt) and the ``/metrics`` collector of spend.

How a hard budget holds, with attempts in flight: before an attempt is sent, its
*reservation* (the most it can cost: its request's bytes as input tokens, since a token is
at least one byte, plus ``max_tokens``, or the budget's ``reserve_output_tokens``, as
output, plus the per-request price) is checked against every account the attempt counts
in (the service's, the client key's, its vendor's) and held there; the attempt is sent
only if ``spent + reserved + this <= hard`` in each. When it ends, the reservation is
released and the real cost is spent. The check and the hold happen in one event-loop
step, so 32 concurrent requests cannot all pass the same headroom. At request start the
backends whose reservation no longer fits are skipped (``Attempts.skip``): the request
goes to a cheaper tier, and when no backend fits it is shed with 429.

What an attempt costs: an answer, its ``usage`` (tokens) at the backend's price, or, when
the answer has no ``usage``, an estimate (about 4 bytes a token) marked ``estimated``; a
failure with a status (5xx, 429, malformed) nothing, as vendors bill answers; an attempt
sent and never answered (timed out, cancelled by a hedge's win, a stream cut) its input
estimate and per-request price, marked estimated, because the vendor may have billed the
prompt.

Must never: do I/O or await (spend rows go to a ``SpendWriter`` queue; the event loop
never waits on SQLite); hold a client's key (a key is named by a digest's first 8 hex
digits); let a reservation outlive its attempt.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from bastion import event_kinds as ek
from bastion.resilience import Clock, monotonic
from bastion.serve._outcome import (
    CANCELLED,
    DEADLINE,
    STALLED,
    TIMEOUT,
    TTFT_TIMEOUT,
    Failure,
    Outcome,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from bastion.manifest import Budget, Price, Service
    from bastion.serve._attempts import Attempts
    from bastion.serve.pool import Pool, Upstream

__all__ = [
    "CAUSES",
    "OVER_BUDGET",
    "PICO",
    "Account",
    "AccountStatistics",
    "Bill",
    "Cause",
    "Charge",
    "Ledger",
    "LedgerStatistics",
    "Rate",
    "Ticket",
    "Window",
    "cause_of",
    "estimate_tokens",
    "key_id",
    "read_usage",
    "weigh",
]

Cause = Literal["first", "retry", "hedge", "fallback", "shadow", "probe"]
CAUSES: tuple[Cause, ...] = ("first", "retry", "hedge", "fallback", "shadow", "probe")
"""Why an attempt was made: ``first`` (a request's first attempt), ``retry`` (after a
failure, on the same tier), ``hedge`` (beside a slow attempt), ``fallback`` (on a higher
tier than the request's first attempt), ``shadow`` (a copy of a request sent to a rollout
arm whose answer the client never sees), ``probe`` (a paid call Bastion makes itself, such
as a golden probe)."""

PICO = 10**12
"""Amounts are whole pico-units of their currency (1e-12): sums over causes, backends and
windows are exact integers, and a price of 0.000001 per 1k tokens is still 1000 pico a
token."""

OVER_BUDGET = Outcome("over budget", "none", "none", False, "requeue", 429)
"""An attempt not sent because a hard budget could not hold its reservation: try another
backend (no retry token: nothing reached a backend), or shed the request with 429."""

_UNANSWERED = frozenset({TIMEOUT, TTFT_TIMEOUT, CANCELLED, DEADLINE, STALLED})
"""Outcomes of an attempt that reached the backend and got no whole answer: its prompt
may have been billed."""

_USAGE = re.compile(rb'"usage"\s*:\s*\{([^{}]*)\}')
_USAGE_OPENAI = re.compile(
    rb'"usage"\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d+)\s*,\s*"completion_tokens"\s*:\s*(\d+)'
)
"""OpenAI's own order of the usage fields: one match, the common case."""
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_EVENT = b"data:"


def estimate_tokens(n_bytes: int) -> int:
    """Tokens in ``n_bytes`` of text, estimated (about 4 bytes a token, as OpenAI's rule
    of thumb for English; at least 1)."""
    return max(1, (n_bytes + 3) // 4)


def read_usage(body: bytes) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) from an OpenAI answer's ``usage``, or None when
    it has none. A regular expression, not ``json.loads``: it runs on every answer, and
    the protocol check has parsed the body already."""
    at = body.rfind(b'"usage"')  # an answer's usage comes last: look from the end
    if at < 0:
        return None
    fast = _USAGE_OPENAI.match(body, at)
    if fast is not None:
        return int(fast.group(1)), int(fast.group(2))
    found = _USAGE.match(body, at)
    if found is None:
        return None
    inner = found.group(1)
    prompt = _PROMPT.search(inner)
    if prompt is None:
        return None
    completion = _COMPLETION.search(inner)
    return int(prompt.group(1)), int(completion.group(1)) if completion is not None else 0


def key_id(authorization: str | None) -> str:
    """How spend names a client key: ``key-`` and the first 8 hex digits of its SHA-256
    (never the key); "" without one."""
    if not authorization:
        return ""
    token = authorization.partition(" ")[2].strip()
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    return f"key-{digest[:8]}"


def cause_of(index: int, tier: int, first_tier: int, *, hedge: bool) -> Cause:
    """The cause of a request's attempt number ``index`` (0 first) on a backend of
    ``tier``, the request's first attempt having gone to ``first_tier``."""
    if index == 0:
        return "first"
    if hedge:
        return "hedge"
    return "fallback" if tier > first_tier else "retry"


@dataclass(frozen=True, slots=True)
class Rate:
    """A backend's price in whole pico-units: per input token, per output token, per
    answered request."""

    currency: str = "USD"
    input_per_token: int = 0
    output_per_token: int = 0
    per_request: int = 0

    @classmethod
    def of(cls, price: Price | None) -> Rate:
        if price is None:
            return FREE
        return cls(
            currency=price.currency,
            input_per_token=round(price.input_per_1k * PICO / 1000),
            output_per_token=round(price.output_per_1k * PICO / 1000),
            per_request=round(price.per_request * PICO),
        )

    def cost(self, input_tokens: int, output_tokens: int) -> int:
        return (
            self.per_request
            + input_tokens * self.input_per_token
            + output_tokens * self.output_per_token
        )

    @property
    def free(self) -> bool:
        return not (self.input_per_token or self.output_per_token or self.per_request)


FREE = Rate()


class Window:
    """Spend over a sliding window of ``window_s``, kept in 60 steps: an amount counts
    until 59 to 60 steps after the step it was spent in."""

    __slots__ = ("_clock", "_expired", "_steps", "n", "step_s", "total")

    def __init__(self, window_s: float, *, clock: Clock = monotonic, steps: int = 60) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.step_s = window_s / steps
        self.n = steps
        self._clock = clock
        self._steps: deque[list[int]] = deque()  # [step index, amount], oldest first
        self._expired = -(2**62)  # the step last expired at: nothing more leaves within it
        self.total = 0

    def _expire(self, now: float) -> int:
        return self._expire_step(int(now // self.step_s))

    def _expire_step(self, step: int) -> int:
        if step == self._expired:
            return step
        self._expired = max(self._expired, step)
        steps = self._steps
        oldest = step - self.n
        while steps and steps[0][0] <= oldest:
            self.total -= steps.popleft()[1]
        return step

    def add(self, amount: int, now: float | None = None) -> None:
        step = int((self._clock() if now is None else now) // self.step_s)
        steps = self._steps
        if steps and steps[-1][0] == step:
            # the step this amount lands in was expired at when it began: nothing to do
            steps[-1][1] += amount
        else:
            self._expire_step(step)
            steps.append([step, amount])
        self.total += amount

    def spent(self, now: float | None = None) -> int:
        self._expire(self._clock() if now is None else now)
        return self.total


@dataclass(frozen=True, slots=True)
class AccountStatistics:
    """One budget account at one moment (amounts in the budget's currency).

    Attributes:
        name: what it limits: ``service``, ``key:<id>`` or ``vendor:<name>``, and its window.
        currency: the currency of the amounts.
        spent: spend within the window.
        reserved: held by attempts in flight.
        soft: the soft limit (None: none).
        hard: the hard limit.
        refused: attempts not sent because they would not fit.
        over_soft: spend and reservations are at or past the soft limit.
    """

    name: str
    currency: str
    spent: float
    reserved: float
    soft: float | None
    hard: float
    refused: int
    over_soft: bool


class Account:
    """One budget's spend (a ``Window``), its reservations in flight, and its limits."""

    __slots__ = (
        "currency",
        "hard",
        "name",
        "over_hard",
        "over_soft",
        "refused",
        "reserved",
        "soft",
        "window",
    )

    def __init__(
        self,
        name: str,
        *,
        hard: int,
        soft: int | None,
        window_s: float,
        currency: str,
        clock: Clock = monotonic,
    ) -> None:
        self.name = name
        self.hard = hard
        self.soft = soft
        self.currency = currency
        self.window = Window(window_s, clock=clock)
        self.reserved = 0
        self.refused = 0
        self.over_soft = False
        self.over_hard = False

    @classmethod
    def of(cls, budget: Budget, name: str, clock: Clock = monotonic, share: float = 1.0) -> Account:
        """The account of ``budget``; ``share``: this gateway's part of it (one of a
        service's N active-active gateways holds 1/N of each limit)."""
        return cls(
            f"{name}/{budget.window}",
            hard=round(budget.hard * share * PICO),
            soft=round(budget.soft * share * PICO) if budget.soft is not None else None,
            window_s=budget.window_s,
            currency=budget.currency,
            clock=clock,
        )

    def headroom(self) -> int:
        return self.hard - self.window.spent() - self.reserved

    def fits(self, need: int) -> bool:
        """Can it hold a reservation of ``need``? The total not yet expired bounds the
        window's spend from above, so most checks need no clock read."""
        if self.window.total + self.reserved + need <= self.hard:
            return True
        return self.window.spent() + self.reserved + need <= self.hard

    def past_soft(self) -> bool:
        soft = self.soft
        if soft is None or self.window.total + self.reserved < soft:
            return False
        return self.window.spent() + self.reserved >= soft

    def statistics(self) -> AccountStatistics:
        return AccountStatistics(
            name=self.name,
            currency=self.currency,
            spent=self.window.spent() / PICO,
            reserved=self.reserved / PICO,
            soft=self.soft / PICO if self.soft is not None else None,
            hard=self.hard / PICO,
            refused=self.refused,
            over_soft=self.past_soft(),
        )


class Charge(NamedTuple):
    """What one attempt cost: the row spend accounting writes (amounts in pico-units). A
    named tuple rather than a frozen dataclass: one is made per attempt, on the event
    loop, and a tuple is made in a fifth of the time.

    Attributes:
        service, backend, tier: where it went (``backend`` is the manifest backend).
        key: the client key's id (``key-<8 hex>``), or "" without auth.
        cause: why it was made (one of ``CAUSES``).
        currency: the currency of ``cost``.
        input_tokens, output_tokens: its tokens, from ``usage`` or estimated.
        estimated: the tokens are an estimate (the answer had no ``usage``, or none came).
        cost: what it cost, in pico-units.
    """

    service: str
    backend: str
    tier: int
    key: str
    cause: Cause
    currency: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    cost: int


T = TypeVar("T")


class Ticket:
    """One attempt's place in the ledger: its cause, rate and reservation, until settled."""

    __slots__ = (
        "accounts",
        "backend",
        "bill",
        "cause",
        "events",
        "rate",
        "reserved",
        "tier",
        "usage",
    )

    def __init__(  # noqa: PLR0917 - made in one place, Ledger.reserve
        self,
        bill: Bill,
        backend: str,
        tier: int,
        cause: Cause,
        rate: Rate,
        reserved: int,
        accounts: tuple[Account, ...],
    ) -> None:
        self.bill = bill
        self.backend = backend
        self.tier = tier
        self.cause = cause
        self.rate = rate
        self.reserved = reserved
        self.accounts = accounts
        self.events = 0  # SSE events relayed (a stream's estimate of its output tokens)
        self.usage: tuple[int, int] | None = None  # a stream's final usage chunk, if any

    def answered(self, status: int, body: bytes) -> None:
        """Settle a whole answer's attempt: nothing for a status of 400 or more (vendors
        bill answers), else the answer's ``usage``, or an estimate, marked, when it has
        none. The gateway reserves (``Ledger.reserve``) and settles (this, or
        ``failed``) inline in its attempt, with no coroutine around it: that wrapper was
        a measurable share of accounting's CPU per request."""
        bill = self.bill
        if status >= 400:
            bill.ledger.settle(bill, self, None, estimated=False)
            return
        usage = read_usage(body)
        if usage is None:
            guess = (bill._input_estimate(), estimate_tokens(max(len(body) - 200, 0)))
            bill.ledger.settle(bill, self, guess, estimated=True)
        else:
            bill.ledger.settle(bill, self, usage, estimated=False)

    def failed(self, outcome: Outcome | None) -> None:
        """Settle an attempt that got no answer: ``outcome`` its Failure's, or None
        (cancelled, or an error that is not the backend's)."""
        self.bill._failed(self, outcome)

    def tap(self, chunk: bytes) -> None:
        """A relayed piece of a stream: count its events, keep a ``usage`` if it has one."""
        self.events += chunk.count(_EVENT)
        if b'"usage"' in chunk:
            found = read_usage(chunk)
            if found is not None:
                self.usage = found


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    """A gateway's spend since it started, and its budgets.

    Attributes:
        currency: the currency of its prices.
        total: spend since start.
        by_cause: spend since start by cause (they add up to ``total``).
        estimated: attempts whose tokens were estimated.
        refused: attempts not sent for a hard budget.
        shed: requests shed with 429 because no backend fitted a budget.
        budgets: each budget account.
    """

    currency: str
    total: float
    by_cause: dict[str, float]
    estimated: int
    refused: int
    shed: int
    budgets: tuple[AccountStatistics, ...]


class Ledger:
    """One gateway's prices, budgets and spend counters.

    ``rates``: each manifest backend's (an upstream's ``spec.group``, or its name) rate;
    ``vendor``: each backend's vendor (its provider, or its name); ``budgets``: the
    service's. ``sink(charge)`` takes every charge off the event loop (a
    ``SpendWriter.put``); ``record`` emits budget events (the gateway's ``record``).
    """

    def __init__(
        self,
        service: str,
        rates: Mapping[str, Rate],
        *,
        budgets: Sequence[Budget] = (),
        vendor: Mapping[str, str] | None = None,
        sink: Callable[[Charge], object] | None = None,
        clock: Clock = monotonic,
        share: float = 1.0,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.service = service
        self.share = share
        self.rates = dict(rates)
        self.vendor = dict(vendor or {})
        self.currency = next((r.currency for r in self.rates.values() if not r.free), "USD")
        self._clock = clock
        self.sink = sink
        self.record: Callable[..., None] = lambda kind, **data: None
        self._service_accounts: list[Account] = []
        self._vendor_accounts: dict[str, list[Account]] = {}
        self._key_budgets: list[Budget] = []
        self._key_accounts: dict[str, list[Account]] = {}
        self._keys: dict[str, str] = {}  # Authorization header -> key id (accepted keys only)
        self.reserve_output = 1024
        for budget in budgets:
            if budget.scope == "service":
                self._service_accounts.append(Account.of(budget, "service", clock, share))
            elif budget.scope == "vendor":
                assert budget.vendor is not None
                self._vendor_accounts.setdefault(budget.vendor, []).append(
                    Account.of(budget, f"vendor:{budget.vendor}", clock, share)
                )
            else:
                self._key_budgets.append(budget)
        if budgets:
            self.reserve_output = max(b.reserve_output_tokens for b in budgets)
        self.budgeted = bool(budgets)
        self._by_key_group: dict[tuple[str, str], tuple[Account, ...]] = {}
        self._watched_by_key: dict[str, tuple[Account, ...]] = {}
        self._tripped = 0  # accounts past a limit, waiting to be re-armed
        # a rate at least as dear as every backend's in each part: the bound of the
        # reservation a request can need anywhere
        self._ceiling = Rate(
            self.currency,
            max((r.input_per_token for r in self.rates.values()), default=0),
            max((r.output_per_token for r in self.rates.values()), default=0),
            max((r.per_request for r in self.rates.values()), default=0),
        )
        # (backend, cause) -> [cost, input tokens, output tokens, attempts, estimated]
        self.counts: dict[tuple[str, str], list[int]] = {}
        self.refused = 0
        self.shed = 0

    @classmethod
    def for_service(
        cls,
        name: str,
        service: Service,
        *,
        sink: Callable[[Charge], object] | None = None,
        clock: Clock = monotonic,
    ) -> Ledger | None:
        """The ledger of a manifest service, or None when it has no price and no budget
        (then the gateway does no accounting at all). Its budgets are this gateway's
        share: with N ``gateways`` (active-active), 1/N of each limit, so N gateways that
        share no state still never spend more than the whole budget together."""
        if not service.budgets and all(b.price is None for b in service.backends):
            return None
        return cls(
            name,
            {b.name: Rate.of(b.price) for b in service.backends},
            budgets=service.budgets,
            vendor={b.name: b.provider or b.name for b in service.backends},
            sink=sink,
            clock=clock,
            share=1.0 / len(service.gateway_addresses),
        )

    @property
    def longest_window_s(self) -> float:
        """The longest budget window (0 without budgets): how far back ``seed`` reads."""
        return max((a.window.step_s * a.window.n for a in self._all_accounts()), default=0.0)

    def seed(self, spent: Iterable[tuple[float, str, str, int]]) -> None:
        """Count spend from before this gateway started in its budgets' windows:
        ``(age in seconds, backend, key id, cost in pico-units)`` rows, oldest first (a
        restarted gateway must not forget what its window already spent)."""
        if not self.budgeted:
            return
        now = self._clock()
        for age, backend, key, cost in spent:
            for account in self._accounts(key, backend):
                if age < account.window.step_s * account.window.n:
                    account.window.add(cost, now - age)

    # -- accounts -----------------------------------------------------------------------------
    def _key(self, authorization: str | None) -> str:
        if not authorization:
            return ""
        found = self._keys.get(authorization)
        if found is None:
            found = self._keys[authorization] = key_id(authorization)
        return found

    def _accounts(self, key: str, group: str) -> tuple[Account, ...]:
        """Every account an attempt of ``key``'s on backend ``group`` counts in (made
        once per key and backend: the set of keys a gateway accepts is fixed)."""
        found = self._by_key_group.get((key, group))
        if found is None:
            found = self._by_key_group[key, group] = self._accounts_of(key, group)
        return found

    def _accounts_of(self, key: str, group: str) -> tuple[Account, ...]:
        out = list(self._service_accounts)
        if key and self._key_budgets:
            mine = self._key_accounts.get(key)
            if mine is None:
                mine = self._key_accounts[key] = [
                    Account.of(b, f"key:{key}", self._clock, self.share) for b in self._key_budgets
                ]
            out.extend(mine)
        vendor = self._vendor_accounts.get(self.vendor.get(group, group))
        if vendor:
            out.extend(vendor)
        return tuple(out)

    def _all_accounts(self) -> Iterable[Account]:
        yield from self._service_accounts
        for accounts in self._vendor_accounts.values():
            yield from accounts
        for accounts in self._key_accounts.values():
            yield from accounts

    def rate(self, up: Upstream) -> Rate:
        spec = up.spec
        return self.rates.get(spec.group or spec.name, FREE)

    # -- a request ----------------------------------------------------------------------------
    def bill(
        self, obj: Mapping[str, Any], body_len: int, authorization: str | None, pool: Pool
    ) -> Bill:
        """The bill of one request (its JSON ``obj``, ``body_len`` bytes, its client's
        ``Authorization``), with the backends it cannot afford and whether it may hedge."""
        cap = obj.get("max_completion_tokens", obj.get("max_tokens"))
        out = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
        bill = Bill(self, self._key(authorization), body_len, out or self.reserve_output)
        if self.budgeted:
            watched = self._watched(bill.key)
            if self._tripped:
                self._rearm(watched)
            for account in watched:
                if account.past_soft():
                    bill.hedge = False
                    self._soft_event([a for a in watched if a.past_soft()])
                    break
            # Fast path: when every account could hold the dearest backend's reservation,
            # no backend is skipped and none need be looked at.
            ceiling = bill.reservation(self._ceiling)
            for account in watched:
                if not account.fits(ceiling):
                    break
            else:
                return bill
            skip = []
            for up in pool.upstreams.values():
                need = bill.reservation(self.rate(up))
                for account in self._accounts(bill.key, up.spec.group):
                    if not account.fits(need):
                        skip.append(up)
                        self._hard_reached(account, need)
                        break
            bill.skip = tuple(skip)
            bill.nowhere = bool(skip) and len(skip) >= len(pool.upstreams)
        return bill

    def _soft_event(self, accounts: Iterable[Account]) -> None:
        for account in accounts:
            if not account.over_soft:
                account.over_soft = True
                self._tripped += 1
                self.record(
                    ek.COST_BUDGET_SOFT_LIMIT,
                    budget=account.name,
                    spent=account.window.spent() / PICO,
                    reserved=account.reserved / PICO,
                    soft=(account.soft or 0) / PICO,
                    currency=account.currency,
                )

    def _watched(self, key: str) -> tuple[Account, ...]:
        """The accounts a request of ``key`` may count in, whichever backend it goes to."""
        found = self._watched_by_key.get(key)
        if found is None:
            vendors = tuple(a for v in self._vendor_accounts.values() for a in v)
            found = self._watched_by_key[key] = self._accounts(key, "") + vendors
        return found

    def _hard_event(self, account: Account, need: int) -> None:
        account.refused += 1
        self.refused += 1
        self._hard_reached(account, need)

    def _hard_reached(self, account: Account, need: int) -> None:
        """``account`` cannot hold a reservation of ``need``: an event, once per crossing."""
        if not account.over_hard:
            account.over_hard = True
            self._tripped += 1
            self.record(
                ek.COST_BUDGET_HARD_LIMIT,
                budget=account.name,
                spent=account.window.spent() / PICO,
                reserved=account.reserved / PICO,
                hard=account.hard / PICO,
                needed=need / PICO,
                currency=account.currency,
            )

    def _rearm(self, accounts: Iterable[Account]) -> None:
        """Spend that left the window may have brought an account back under its limits:
        below 90 % of one (spend alone, so reservations coming and going do not make the
        event flap), its next crossing is a new event."""
        for account in accounts:
            if account.over_hard and account.window.spent() < 0.9 * account.hard:
                account.over_hard = False
                self._tripped -= 1
            soft = account.soft
            if account.over_soft and (soft is None or account.window.spent() < 0.9 * soft):
                account.over_soft = False
                self._tripped -= 1

    def refusal(self, bill: Bill) -> str:
        """Why ``bill``'s request cannot be sent anywhere, for its 429."""
        self.shed += 1
        worst = min(self._watched(bill.key), key=lambda a: a.headroom(), default=None)
        if worst is None:  # pragma: no cover - bill.skip is empty without budgets
            return f"service {self.service}: over budget"
        self._hard_event(worst, 0)
        left = max(worst.headroom(), 0) / PICO
        return (
            f"service {self.service}: over budget {worst.name} (hard {worst.hard / PICO:g} "
            f"{worst.currency}, {left:.6g} left with attempts in flight held), and no backend "
            "of a cheaper tier fits this request; retry once the window frees spend, send a "
            "smaller max_tokens, or raise the budget's hard limit"
        )

    # -- an attempt ---------------------------------------------------------------------------
    def reserve(self, bill: Bill, up: Upstream, cause: Cause) -> Ticket:
        """Hold the attempt's reservation on every account it counts in, or raise
        ``Failure(OVER_BUDGET)`` when one cannot take it (then nothing is held)."""
        spec = up.spec
        group = spec.group or spec.name
        rate = self.rates.get(group, FREE)
        if not self.budgeted:
            return Ticket(bill, group, spec.tier, cause, rate, 0, ())
        need = bill.reservation(rate)
        accounts = self._accounts(bill.key, group)
        for account in accounts:
            if not account.fits(need):
                self._hard_event(account, need)
                raise Failure(
                    OVER_BUDGET,
                    f"budget {account.name} of service {self.service} cannot hold this "
                    f"attempt on {up.name} (it could cost {need / PICO:.6g} {account.currency};"
                    f" {max(account.headroom(), 0) / PICO:.6g} left)",
                )
        for account in accounts:
            account.reserved += need
        return Ticket(bill, group, spec.tier, cause, rate, need, accounts)

    def settle(
        self, bill: Bill, ticket: Ticket, tokens: tuple[int, int] | None, *, estimated: bool
    ) -> Charge:
        """The attempt ``ticket`` ended having used ``tokens`` (input, output; None: it
        cost nothing): release its reservation, spend its cost, count it, and hand the
        charge to the sink."""
        if tokens is None:
            cost, tokens, estimated = 0, (0, 0), False
        else:
            cost = ticket.rate.cost(*tokens)
        if ticket.accounts:
            held = ticket.reserved
            for account in ticket.accounts:
                account.reserved -= held
                if cost:
                    account.window.add(cost)
            ticket.reserved = 0
            if self._tripped:
                self._rearm(ticket.accounts)
        key = (ticket.backend, ticket.cause)
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0, 0, 0, 0, 0]
        row[0] += cost
        row[1] += tokens[0]
        row[2] += tokens[1]
        row[3] += 1
        row[4] += estimated
        charge = Charge(
            self.service,
            ticket.backend,
            ticket.tier,
            bill.key,
            ticket.cause,
            ticket.rate.currency,
            tokens[0],
            tokens[1],
            estimated,
            cost,
        )
        if self.sink is not None:
            self.sink(charge)
        return charge

    def probe(self, up: Upstream, request_bytes: int, status: int, payload: bytes) -> None:
        """A paid call Bastion made itself (a golden round) on ``up``: charged with cause
        ``probe`` and counted in the budgets' windows, never refused by them (a probe is
        how an ejected backend earns its way back)."""
        spec = up.spec
        group = spec.group or spec.name
        rate = self.rates.get(group, FREE)
        if rate.free:
            return
        bill = Bill(self, "", request_bytes, 0)
        ticket = Ticket(bill, group, spec.tier, "probe", rate, 0, self._accounts("", group))
        if status >= 400:
            self.settle(bill, ticket, None, estimated=False)
            return
        usage = read_usage(payload)
        if usage is None:
            guess = (estimate_tokens(request_bytes), estimate_tokens(len(payload)))
            self.settle(bill, ticket, guess, estimated=True)
        else:
            self.settle(bill, ticket, usage, estimated=False)

    # -- reading ------------------------------------------------------------------------------
    def total(self) -> int:
        return sum(row[0] for row in self.counts.values())

    def statistics(self) -> LedgerStatistics:
        by_cause = dict.fromkeys(CAUSES, 0)
        estimated = 0
        for (_, cause), row in self.counts.items():
            by_cause[cause] += row[0]  # type: ignore[index]
            estimated += row[4]
        return LedgerStatistics(
            currency=self.currency,
            total=self.total() / PICO,
            by_cause={c: v / PICO for c, v in by_cause.items()},
            estimated=estimated,
            refused=self.refused,
            shed=self.shed,
            budgets=tuple(a.statistics() for a in self._all_accounts()),
        )

    def collector(self) -> _SpendExporter:
        return _SpendExporter(self)


class Bill:
    """One request's side of the ledger: its key, its reservation's size, the backends it
    cannot afford (``skip``) and whether it may hedge (``hedge``) or shadow (``shadow``)."""

    __slots__ = ("hedge", "input_bytes", "key", "ledger", "max_output", "nowhere", "opened", "skip")

    def __init__(self, ledger: Ledger, key: str, input_bytes: int, max_output: int) -> None:
        self.ledger = ledger
        self.key = key
        self.input_bytes = input_bytes
        self.max_output = max_output
        self.skip: tuple[Upstream, ...] = ()
        self.nowhere = False  # no backend of the pool fits a hard budget for this request
        self.hedge = True
        # id(opened stream) -> its ticket; made on a stream's first use (most requests
        # are whole answers, and pay for no dict)
        self.opened: dict[int, Ticket] | None = None

    @property
    def shadow(self) -> bool:
        """May this request be copied to a shadow arm? Not past a soft limit (as hedges)."""
        return self.hedge

    def reservation(self, rate: Rate) -> int:
        """The most one attempt of this request can cost at ``rate``."""
        return rate.cost(self.input_bytes, self.max_output)

    def cause(self, up: Upstream, attempts: Attempts) -> Cause:
        tried = attempts.tried
        if not tried or tried[0] is up:
            return "first"
        index = tried.index(up) if up in tried else len(tried)
        return cause_of(index, up.spec.tier, tried[0].spec.tier, hedge=up in attempts.hedged)

    def _input_estimate(self) -> int:
        return estimate_tokens(self.input_bytes)

    def _failed(self, ticket: Ticket, outcome: Outcome | None) -> None:
        """Settle an attempt that got no answer: its prompt may be billed when it reached
        the backend and was never answered (``outcome`` None: cancelled)."""
        if outcome is None or outcome in _UNANSWERED:
            self.ledger.settle(self, ticket, (self._input_estimate(), 0), estimated=True)
        else:
            self.ledger.settle(self, ticket, None, estimated=False)

    async def opening(
        self,
        up: Upstream,
        attempts: Attempts,
        attempt: Callable[[], Coroutine[Any, Any, T]],
        *,
        cause: Cause | None = None,
    ) -> T:
        """Run ``attempt()`` (a stream on ``up``, up to its first bytes) reserved; the
        stream that opens keeps its ticket until ``relayed`` or ``discarded``."""
        ticket = self.ledger.reserve(self, up, cause or self.cause(up, attempts))
        try:
            opened = await attempt()
        except Failure as failure:
            self._failed(ticket, failure.outcome)
            raise
        except BaseException:
            self._failed(ticket, None)
            raise
        if self.opened is None:
            self.opened = {}
        self.opened[id(opened)] = ticket
        return opened

    def ticket_of(self, opened: object) -> Ticket | None:
        return self.opened.get(id(opened)) if self.opened is not None else None

    def relayed(self, opened: object, *, answered: bool) -> None:
        """The stream ``opened`` ended (``answered``: it got its first bytes, so its prompt
        was processed, however it ended; False: a client error passed on): settle it with
        its final ``usage``, or its events as an estimate."""
        ticket = self.opened.pop(id(opened), None) if self.opened is not None else None
        if ticket is None:
            return
        if ticket.usage is not None:
            self.ledger.settle(self, ticket, ticket.usage, estimated=False)
        elif answered or ticket.events:
            # one SSE event is about one token; the last two are the finish and [DONE]
            out = max(ticket.events - 2, 1)
            self.ledger.settle(self, ticket, (self._input_estimate(), out), estimated=True)
        else:
            self.ledger.settle(self, ticket, None, estimated=False)

    def discarded(self, opened: object) -> None:
        """A stream that opened but lost a hedge race (closed at its first bytes)."""
        ticket = self.opened.pop(id(opened), None) if self.opened is not None else None
        if ticket is not None:
            self.ledger.settle(self, ticket, (self._input_estimate(), 1), estimated=True)


_REFERENCE = (500, 500)
"""The request cost-aware routing prices backends by: 500 input and 500 output tokens."""


def weigh(pool: Pool, ledger: Ledger, margin: float) -> None:
    """Cost-aware routing: in each tier, a backend dearer than the tier's cheapest (for a
    reference request) gets weight ``1 + margin`` on its P2C score, the cheapest 1. The
    cheaper of two candidates then wins unless its score is more than ``margin`` worse."""
    for tier in pool.tiers:
        costs = [ledger.rate(up).cost(*_REFERENCE) for up in tier]
        cheapest = min(costs, default=0)
        for up, cost in zip(tier, costs, strict=True):
            up.weight = 1.0 + margin if cost > cheapest else 1.0


class _SpendExporter:
    """The ``/metrics`` families of a ledger (a ``prometheus_client`` collector)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ledger = self._ledger
        service = ledger.service
        spend = CounterMetricFamily(
            "bastion_gateway_spend",
            "Spend on a backend by cause (first, retry, hedge, fallback, shadow, probe), in "
            "the currency of its price",
            labels=["service", "backend", "cause", "currency"],
        )
        tokens = CounterMetricFamily(
            "bastion_gateway_spend_tokens",
            "Tokens spent on a backend by cause and direction (input, output)",
            labels=["service", "backend", "cause", "direction"],
        )
        attempts = CounterMetricFamily(
            "bastion_gateway_spend_attempts",
            "Attempts accounted on a backend by cause",
            labels=["service", "backend", "cause"],
        )
        estimated = CounterMetricFamily(
            "bastion_gateway_spend_estimated",
            "Attempts whose tokens were estimated (no usage in the answer)",
            labels=["service", "backend", "cause"],
        )
        for (backend, cause), row in list(ledger.counts.items()):
            currency = ledger.rates.get(backend, FREE).currency
            spend.add_metric([service, backend, cause, currency], row[0] / PICO)
            tokens.add_metric([service, backend, cause, "input"], float(row[1]))
            tokens.add_metric([service, backend, cause, "output"], float(row[2]))
            attempts.add_metric([service, backend, cause], float(row[3]))
            estimated.add_metric([service, backend, cause], float(row[4]))
        yield spend
        yield tokens
        yield attempts
        yield estimated
        labels = ["service", "budget", "currency"]
        spent = GaugeMetricFamily(
            "bastion_gateway_budget_spent", "Spend within a budget's window", labels=labels
        )
        reserved = GaugeMetricFamily(
            "bastion_gateway_budget_reserved",
            "Reservations of attempts in flight against a budget",
            labels=labels,
        )
        hard = GaugeMetricFamily(
            "bastion_gateway_budget_hard", "A budget's hard limit", labels=labels
        )
        refused = CounterMetricFamily(
            "bastion_gateway_budget_refused",
            "Attempts not sent because a budget could not hold their reservation",
            labels=labels,
        )
        for account in list(ledger._all_accounts()):
            named = [service, account.name, account.currency]
            spent.add_metric(named, account.window.spent() / PICO)
            reserved.add_metric(named, account.reserved / PICO)
            hard.add_metric(named, account.hard / PICO)
            refused.add_metric(named, float(account.refused))
        yield spent
        yield reserved
        yield hard
        yield refused

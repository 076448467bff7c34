"""A request's attempts, in the shape of stamina's ``retry_context``: iterate, and each
step hands out the backend for the next attempt or ends the request.

Owns: ``AttemptRules`` (one per gateway: the pool, the retry budget, ``max_attempts``
and the clock, and the counts of retries, requeues and hedges) and ``Attempts`` (one per
request, from ``AttemptRules.start(deadline)``: the attempt count, the deadline, the
backends already tried, which are never picked again, and the last failure). The
gateway's whole-answer path and its stream path run the same loop::

    attempts = rules.start(deadline)
    for up in attempts:
        if up is None:          # no backend has room now: wait for capacity, then ask again
            ...
            continue
        try:
            return await attempt(up)
        except Failure as failure:
            attempts.failed(failure)
    return give_up(attempts)

The rules, each for a reason:
- at most ``max_attempts`` attempts per request, hedges included;
- never past the deadline;
- never the same backend twice (a retry must go elsewhere; Envoy's previous_hosts);
- after a refused or reset connection the next attempt is a *requeue*, free of the retry
  budget, as Finagle's requeues are: the request put no load on a backend, so it cannot
  feed a retry storm, and a crashed replica's in-flight requests must all move;
- after a timeout, 5xx, 429 or malformed answer (which may mean overload) the next
  attempt, and any hedge, spends a retry budget token, so retries add at most the
  budget's ratio to the load;
- a request has one hedge, spent only when its timer fires and a backend takes it;
- one attempt may not spend the whole deadline while another backend could still take
  the request: it gets the policy's ``attempt_timeout_ms`` or, unset, an even share of the
  time left over the attempts that could still be made (``attempt_deadline``), so a
  request whose primaries all hang still has time for the fallback tier (Envoy's
  ``per_try_timeout`` beside the route's ``timeout``).

Must never: await or do I/O (the gateway waits for capacity and runs the attempts);
decide what an outcome means (``_outcome`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.resilience import Clock, RetryBudget
from bastion.serve._outcome import Failure
from bastion.serve.pool import STABLE, Pool, Upstream

__all__ = ["AttemptRules", "AttemptStatistics", "Attempts"]


@dataclass(frozen=True, slots=True)
class AttemptStatistics:
    """How a gateway's requests used their attempts.

    Attributes:
        max_attempts: the most attempts one request may make, hedges included.
        retries: attempts after a failure that spent a retry budget token.
        requeues: attempts after a refused or reset connection (no token spent).
        hedges: hedges sent (each spent a token).
    """

    max_attempts: int
    retries: int
    requeues: int
    hedges: int


class AttemptRules:
    """The rules every request's attempts follow, and their counts."""

    __slots__ = (
        "attempt_timeout_s",
        "budget",
        "clock",
        "hedges",
        "max_attempts",
        "pool",
        "requeues",
        "retries",
    )

    def __init__(
        self,
        pool: Pool,
        budget: RetryBudget,
        *,
        max_attempts: int = 3,
        attempt_timeout_s: float | None = None,
        clock: Clock,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if attempt_timeout_s is not None and attempt_timeout_s <= 0:
            raise ValueError(f"attempt_timeout_s must be positive, got {attempt_timeout_s}")
        self.attempt_timeout_s = attempt_timeout_s
        self.pool = pool
        self.budget = budget
        self.max_attempts = max_attempts
        self.clock = clock
        self.retries = 0
        self.requeues = 0
        self.hedges = 0

    def start(
        self, deadline: float, *, hedge: bool = False, arms: tuple[str, ...] = STABLE
    ) -> Attempts:
        """A new request (it deposits its share in the retry budget), due by ``deadline``
        on this rules' clock; ``hedge``: it may send one hedge; ``arms``: the pool's arms
        it may use, in order (a rollout's split decides them)."""
        self.budget.deposit()
        return Attempts(self, deadline, 1 if hedge else 0, arms)

    def statistics(self) -> AttemptStatistics:
        return AttemptStatistics(
            max_attempts=self.max_attempts,
            retries=self.retries,
            requeues=self.requeues,
            hedges=self.hedges,
        )


class Attempts:
    """One request's attempts. Iterating yields the upstream for the next attempt, or None
    when no backend has room right now (wait for capacity, then iterate again); it stops
    when the request must give up (``expired``, ``last`` and ``tried`` say why)."""

    __slots__ = ("_rules", "arms", "deadline", "hedged", "hedges_left", "last", "skip", "tried")

    def __init__(
        self,
        rules: AttemptRules,
        deadline: float,
        hedges: int = 0,
        arms: tuple[str, ...] = STABLE,
    ) -> None:
        self._rules = rules
        self.arms = arms
        self.deadline = deadline
        self.hedges_left = hedges
        self.tried: tuple[Upstream, ...] = ()
        self.last: Failure | None = None
        # the hedges among ``tried`` (what a cost ledger calls an attempt's cause)
        self.hedged: tuple[Upstream, ...] = ()
        # backends this request may not use (a hard budget ``_cost`` says it cannot afford)
        self.skip: tuple[Upstream, ...] = ()

    def __iter__(self) -> Attempts:
        return self

    def __next__(self) -> Upstream | None:
        rules = self._rules
        if rules.clock() >= self.deadline:
            raise StopIteration
        tried = self.tried
        if len(tried) >= rules.max_attempts:
            raise StopIteration
        pool = rules.pool
        skip = self.skip
        up = pool.pick(tried + skip if skip else tried, self.arms)
        if up is None:
            if len(tried) + len(skip) >= pool.count(self.arms):
                raise StopIteration  # every backend was tried
            return None
        if tried:
            if not self._may_retry():
                raise StopIteration
            up.metrics.retries.inc()
        self.tried = (*tried, up)
        return up

    def _may_retry(self) -> bool:
        last = self.last
        if last is not None and last.outcome.retry == "requeue":
            self._rules.requeues += 1
            return True
        if self._rules.budget.try_withdraw():
            self._rules.retries += 1
            return True
        return False

    def failed(self, failure: Failure) -> None:
        """The attempt just made failed so (this decides how the next one may go)."""
        self.last = failure

    def attempt_deadline(self) -> float:
        """When the attempt starting now (the one just handed out) must give up, on the
        rules' clock: never after the request's deadline, and leaving time for the
        attempts that may still follow it. With the policy's ``attempt_timeout_s`` that is
        its fixed timeout; unset, an even share of the time left over this attempt and
        those that could still be made (other backends not yet tried that are in the pool
        now, within ``max_attempts``), so the last possible attempt gets all that is left."""
        rules = self._rules
        now = rules.clock()
        left = self.deadline - now
        if left <= 0:
            return self.deadline
        fixed = rules.attempt_timeout_s
        if fixed is not None:
            return now + min(fixed, left)
        tried = self.tried
        later = 0
        room = rules.max_attempts - len(tried)
        if room > 0:
            for up in rules.pool.upstreams.values():
                if later >= room:
                    break
                if (
                    up not in tried
                    and up.arm in self.arms
                    and up not in self.skip
                    and not up.needs_probe
                    and up.breaker.available()
                ):
                    later += 1
        return now + left / (1 + later)

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it passed)."""
        return self.deadline - self._rules.clock()

    @property
    def expired(self) -> bool:
        return self._rules.clock() >= self.deadline

    @property
    def may_hedge(self) -> bool:
        """Could a hedge still go out (one is left, under the cap, before the deadline)?"""
        rules = self._rules
        return (
            self.hedges_left > 0
            and len(self.tried) < rules.max_attempts
            and rules.clock() < self.deadline
        )

    def hedge(self) -> Upstream | None:
        """The upstream for a hedge, sent now alongside the attempt in flight, or None
        (no hedge left, the attempt cap reached, no other backend has room, or no budget
        token). A hedge that goes out is spent and counts as tried."""
        rules = self._rules
        tried = self.tried
        if self.hedges_left <= 0 or len(tried) >= rules.max_attempts:
            return None
        up = rules.pool.pick(tried + self.skip if self.skip else tried, self.arms)
        if up is None or not rules.budget.try_withdraw():
            return None
        self.hedges_left -= 1
        rules.hedges += 1
        up.metrics.hedges.inc()
        self.tried = (*tried, up)
        self.hedged = (*self.hedged, up)
        return up

"""The backend pool: each backend's live state, tiers, and routing by power of two choices.

Owns: ``Upstream`` (one backend endpoint with its breaker, adaptive limit, peak-EWMA
latency and outstanding count; ``begin()`` an attempt on it and ``finish(outcome,
elapsed)`` it, which is all the accounting an attempt does) and ``Pool`` (tiers of
upstreams, the ejection cap, ``pick``, and ``finish``, which applies an attempt's outcome
and acts on what the breaker decided: eject, hold for a 429, restore).

Routing is P2C over a score of (outstanding + 1) * latency EWMA, as Finagle and Linkerd
do: two random candidates, the less loaded wins, so no global scan and no herd onto one
"best" backend. ``pick(exclude=...)`` never returns a backend already tried
by this request (a retry always goes elsewhere; Envoy's previous_hosts, #2259, is opt-in
there and built in here). Tiers are tried in order: a fallback tier is used only when
every upstream of the tiers before it is unavailable or already tried.

Rejoining: after a hard failure (refused, timed out, failed probe) an upstream is marked
``needs_probe`` and gets no request until an active probe passes (then its breaker is
reset); after soft failures (5xx, malformed) it rejoins through a half_open trial, since
a health probe cannot see a bad inference answer. One that golden probes saw answer 200
but wrongly (``eject_wrong``, within the cap) rejoins only through a right golden round
(``restore_right``; ``serve/_golden.py``); with golden probes on, so does any backend
coming back after it was down (``hold_rejoin``), before it serves a single request.

Must never: do I/O or await; emit per-request events (only state changes are events).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion import event_kinds as ek
from bastion.events import NO_EVENTS, Emit
from bastion.resilience import (
    AdaptiveLimit,
    AdaptiveLimitStatistics,
    CircuitBreaker,
    CircuitBreakerStatistics,
    Clock,
    EjectionCap,
    EjectionCapStatistics,
    Ewma,
    monotonic,
)
from bastion.serve._outcome import Outcome
from bastion.serve.metrics import BackendMetrics

__all__ = [
    "FAILURE_PENALTY_S",
    "QUARANTINED",
    "REJOINING",
    "STABLE",
    "Pool",
    "PoolStatistics",
    "Upstream",
    "UpstreamSpec",
    "UpstreamStatistics",
]

FAILURE_PENALTY_S = 0.05
#: ``Upstream.wrong`` of a backend that is up again and waits for a right golden round
REJOINING = "rejoining: waiting for a right golden round"


@dataclass(frozen=True)
class UpstreamSpec:
    """What the gateway needs to reach one backend endpoint."""

    name: str
    url: str
    group: str = ""
    tier: int = 0
    model_name: str | None = None
    api_key: str | None = None
    kind: Literal["local", "remote"] = "remote"
    probe_path: str = "/v1/models"
    initial_limit: float = 64.0
    extra: dict[str, str] = field(default_factory=dict)
    #: which side of a rollout it serves: ``stable``, or ``candidate`` (bastion.rollout)
    arm: str = "stable"


#: the arms a request may use when no rollout splits it: the stable ones only
STABLE: tuple[str, ...] = ("stable",)
#: the arm of a quarantined segment's upstreams (bastion.segment): no request uses it
QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """One backend as the gateway sees it.

    Attributes:
        name: the upstream's name (a manifest backend, or ``<backend>-<n>`` for a replica).
        group: the manifest backend it belongs to (the map's node for it).
        tier: 0 for primaries, 1 for fallbacks; lower tiers are tried first.
        url: where it is reached.
        kind: ``local`` (a replica Bastion runs) or ``remote`` (a URL).
        arm: ``stable``, or ``candidate`` while a rollout tries it.
        outstanding: attempts in flight on it now (streams count until they end).
        latency_ewma_ms: its peak-EWMA latency (milliseconds), what P2C routing weighs.
        down_reason: why it is out of the pool, or empty while it is in.
        needs_probe: it gets no request until an active health probe passes.
        last_sent_mono: monotonic time of the last attempt sent to it (0: never).
        ejected_at_mono: monotonic time it was last ejected (0: never).
        breaker: its circuit breaker.
        limit: its adaptive concurrency limit.
    """

    name: str
    group: str
    tier: int
    url: str
    kind: str
    arm: str
    outstanding: int
    latency_ewma_ms: float
    down_reason: str
    needs_probe: bool
    last_sent_mono: float
    ejected_at_mono: float
    breaker: CircuitBreakerStatistics
    limit: AdaptiveLimitStatistics


class Upstream:
    """One backend endpoint and everything the gateway knows about it."""

    __slots__ = (
        "_clock",
        "arm",
        "auth_header",
        "breaker",
        "down_reason",
        "ejected_at",
        "last_sent",
        "latency",
        "limit",
        "metrics",
        "needs_probe",
        "outstanding",
        "spec",
        "used",
        "weight",
        "wrong",
    )

    def __init__(self, spec: UpstreamSpec, metrics: BackendMetrics, clock: Clock) -> None:
        self.spec = spec
        self.arm = spec.arm  # a promotion turns a candidate stable (Pool.set_arm)
        self._clock = clock
        self.breaker = CircuitBreaker(clock=clock)
        self.limit = AdaptiveLimit(initial=spec.initial_limit, clock=clock)
        # Optimistic start (0): a new or rejoined backend is tried soon, so it earns a real
        # latency sample instead of being starved by P2C against warmed-up peers.
        self.latency = Ewma(tau_s=2.0, peak=True, initial=0.0, clock=clock)
        self.outstanding = 0
        self.metrics = metrics
        self.used = False
        self.down_reason = ""
        self.ejected_at = 0.0
        self.needs_probe = False
        self.last_sent = 0.0
        # why golden probes hold it out ("" while its answers are right): no health
        # probe or breaker trial brings it back, only a right golden round (_golden.py)
        self.wrong = ""
        self.auth_header = f"Bearer {spec.api_key}" if spec.api_key else None
        # > 1 for a backend dearer than its tier's cheapest, under cost-aware routing
        # (serve._cost.weigh): P2C then prefers the cheaper one while scores are close
        self.weight = 1.0

    @property
    def name(self) -> str:
        return self.spec.name

    def routable(self) -> bool:
        return (
            not self.needs_probe
            and not self.wrong
            and self.limit.inflight < self.limit.limit
            and self.breaker.available()
        )

    def score(self) -> float:
        return (self.outstanding + 1) * (self.latency.value or 1e-4) * self.weight

    # -- one attempt ----------------------------------------------------------------------
    def begin(self) -> float:
        """An attempt on this upstream starts now (the caller picked it as routable, in
        this event-loop turn). Returns the start time, for ``finish``."""
        now = self._clock()
        breaker = self.breaker
        if breaker.state != "closed":
            breaker.allow()  # claim the one half_open trial, so no second one goes out
        self.outstanding += 1
        self.limit.inflight += 1  # routable() saw room in this same loop turn
        self.metrics.requests.inc()
        self.last_sent = now
        return now

    def finish(self, outcome: Outcome, elapsed: float) -> bool:
        """The attempt ``begin`` started ended with ``outcome`` after ``elapsed`` seconds.

        Settles the attempt's accounting: the in-flight counts, the concurrency limit
        (a latency sample or a drop), the latency estimate, the metrics and the breaker's
        counts. Returns True when the breaker's state should now change, which is the
        pool's to act on (``Pool.finish``): a failure that should trip it, a 429 that
        holds it open, a success that closes it."""
        self.outstanding -= 1
        latency = outcome.latency
        if latency == "sample":
            self.limit.release(elapsed)
            self.latency.update(elapsed)
            self.metrics.latency.observe(elapsed)
        else:
            self.limit.release(None, dropped=outcome.dropped)
            if latency == "penalty":
                # A fast failure must not look like a fast backend (the "black hole" of
                # least-latency routing): count it as a slow sample, which peak EWMA
                # takes at once.
                self.latency.update(max(self.latency.value * 4.0, FAILURE_PENALTY_S))
            elif latency == "bound" and elapsed > self.latency.value:
                # Cancelled (a lost hedge race): it took at least this long.
                self.latency.update(elapsed)
        health = outcome.health
        if health == "success":
            breaker = self.breaker
            if breaker.state == "closed" and not breaker.failures_in_row:
                return False
            return breaker.record_success()
        if health in {"soft", "hard"}:
            self.metrics.errors.inc()
            return self.breaker.record_failure(hard=health == "hard")
        if health == "hold":
            self.metrics.errors.inc()
            return True
        return False

    def statistics(self) -> UpstreamStatistics:
        return UpstreamStatistics(
            name=self.name,
            group=self.spec.group,
            tier=self.spec.tier,
            url=self.spec.url,
            kind=self.spec.kind,
            arm=self.arm,
            outstanding=self.outstanding,
            latency_ewma_ms=self.latency.value * 1e3,
            down_reason=self.down_reason,
            needs_probe=self.needs_probe,
            last_sent_mono=self.last_sent,
            ejected_at_mono=self.ejected_at,
            breaker=self.breaker.statistics(),
            limit=self.limit.statistics(),
        )


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A service's backends.

    Attributes:
        service: the service the pool serves.
        tiers: upstream names by tier, primaries first.
        upstreams: each upstream's statistics.
        ejection_cap: who is ejected by outlier rules, and how often the cap refused.
    """

    service: str
    tiers: tuple[tuple[str, ...], ...]
    upstreams: tuple[UpstreamStatistics, ...]
    ejection_cap: EjectionCapStatistics


class Pool:
    """Tiers of upstreams with P2C routing and capped outlier ejection."""

    def __init__(
        self,
        service: str,
        *,
        max_ejected: float = 0.5,
        events: Emit = NO_EVENTS,
        segment: str | None = None,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.clock = clock
        self.cap = EjectionCap(max_fraction=max_ejected)
        self.upstreams: dict[str, Upstream] = {}
        self.tiers: list[list[Upstream]] = []  # the stable arm's, primaries first
        # tiers below this one take no traffic: a service failed over by request
        # (POST /bastion/control, a playbook's failover), until failed back to 0
        self.min_tier = 0
        self.arms: dict[str, list[list[Upstream]]] = {}
        self._events = events
        self._segment = segment
        self._rng = rng or random.Random()
        self.on_recover: Callable[[], None] = lambda: None
        # set by golden probes: whether an upstream whose health probe passed after it was
        # down must also answer a golden round right before it gets a request
        self.hold_rejoin: Callable[[Upstream], bool] = lambda _up: False

    def _emit(self, kind: str, **data: Any) -> None:
        self._events.emit(kind, self.service, segment=self._segment, **data)

    # -- membership ---------------------------------------------------------------------
    def add(self, upstream: Upstream) -> None:
        self.upstreams[upstream.name] = upstream
        self._rebuild()

    def remove(self, name: str) -> Upstream | None:
        up = self.upstreams.pop(name, None)
        self.cap.restore(name)
        self._rebuild()
        return up

    def set_arm(self, name: str, arm: str) -> None:
        """Move upstream ``name`` to ``arm`` (a promoted candidate becomes stable)."""
        self.upstreams[name].arm = arm
        self._rebuild()

    def _rebuild(self) -> None:
        arms: dict[str, dict[int, list[Upstream]]] = {}
        for up in self.upstreams.values():
            arms.setdefault(up.arm, {}).setdefault(up.spec.tier, []).append(up)
        self.arms = {arm: [tiers[k] for k in sorted(tiers)] for arm, tiers in arms.items()}
        self.tiers = [t for t in self.arms.get("stable", []) if t[0].spec.tier >= self.min_tier]

    def fail_over(self, tier: int) -> tuple[str, ...]:
        """Send the stable arm's traffic to ``tier`` and the tiers after it only (0: every
        tier again). ``ValueError`` when no upstream is there to take it."""
        if tier > 0 and not any(
            up.spec.tier >= tier for up in self.upstreams.values() if up.arm == "stable"
        ):
            raise ValueError(f"no backend of tier {tier} or later to fail over to")
        self.min_tier = tier
        self._rebuild()
        return tuple(up.name for t in self.tiers for up in t)

    def count(self, arms: tuple[str, ...] = STABLE) -> int:
        """How many upstreams serve ``arms``."""
        return sum(len(tier) for arm in arms for tier in self.arms.get(arm, ()))

    # -- routing --------------------------------------------------------------------------
    def pick(
        self, exclude: tuple[Upstream, ...] = (), arms: tuple[str, ...] = STABLE
    ) -> Upstream | None:
        """The upstream for the next attempt, or None when no tier has capacity now.
        ``arms``: whose tiers to try, in order (a rollout's candidate requests try the
        candidate's, then fall back to the stable ones)."""
        if arms is STABLE:
            return self._pick(self.tiers, exclude)
        for arm in arms:
            up = self._pick(self.arms.get(arm, ()), exclude)
            if up is not None:
                return up
        return None

    def _pick(
        self, tiers: Sequence[list[Upstream]], exclude: tuple[Upstream, ...]
    ) -> Upstream | None:
        rng = self._rng
        for tier in tiers:
            n = len(tier)
            if n == 1:
                up = tier[0]
                if up not in exclude and up.routable():
                    return up
                continue
            # Fast path: two random distinct members; fall back to a scan only when one
            # of them is unusable, so the common case costs two lookups.
            i = rng.randrange(n)
            j = rng.randrange(n - 1)
            if j >= i:
                j += 1
            a, b = tier[i], tier[j]
            a_ok = a not in exclude and a.routable()
            b_ok = b not in exclude and b.routable()
            if a_ok and b_ok:
                return a if a.score() <= b.score() else b
            if a_ok or b_ok:
                # One of the two is out; a third healthy member may exist, but P2C's
                # guarantee only needs the better of two usable choices when present.
                others = [u for u in tier if u not in exclude and u.routable()]
                if len(others) >= 2:
                    a, b = rng.sample(others, 2)
                    return a if a.score() <= b.score() else b
                return others[0]
            others = [u for u in tier if u not in exclude and u.routable()]
            if len(others) == 1:
                return others[0]
            if others:
                a, b = rng.sample(others, 2)
                return a if a.score() <= b.score() else b
        return None

    # -- health -----------------------------------------------------------------------------
    def finish(
        self,
        up: Upstream,
        outcome: Outcome,
        elapsed: float,
        *,
        reason: str = "",
        hold_s: float = 0.0,
    ) -> None:
        """An attempt on ``up`` ended with ``outcome``: settle it and act on what its breaker
        decided. A hard failure ejects at once; a soft one ejects within the ejection cap;
        a 429 holds ``up`` out for ``hold_s``; a success may close a half_open breaker.
        ``reason`` is what the ejection event says."""
        if not up.finish(outcome, elapsed):
            return
        health = outcome.health
        if health == "success":
            self._restored(up, via="trial")
        elif health == "hold":
            self._hold(up, hold_s, reason)
        else:
            self._eject(up, hard=health == "hard", reason=reason)

    def _eject(self, up: Upstream, *, hard: bool, reason: str) -> None:
        if up.breaker.state == "closed" and not hard:
            size = sum(1 for u in self.upstreams.values() if u.spec.tier == up.spec.tier)
            if not self.cap.try_eject(up.name, size):
                return
        self._trip(up, reason, hard=hard)

    def _hold(self, up: Upstream, seconds: float, reason: str) -> None:
        """Keep ``up`` out for ``seconds`` (a vendor's 429 with or without Retry-After)."""
        up.breaker.state = "open"
        up.breaker.open_until = max(up.breaker.open_until, self.clock() + seconds)
        if not up.down_reason:
            up.down_reason = reason
            up.ejected_at = self.clock()
            up.metrics.ejections.inc()
            self._emit(
                ek.SERVE_BACKEND_EJECTED,
                backend=up.name,
                reason=reason,
                open_s=round(seconds, 3),
                hard=False,
            )

    def mark_down(self, up: Upstream, reason: str) -> None:
        """``up``'s process is known to be gone (its supervisor saw it exit or hang): no
        request goes to it until a health probe passes."""
        if up.needs_probe:
            return
        up.needs_probe = True
        up.down_reason = reason
        up.ejected_at = self.clock()
        up.metrics.ejections.inc()
        self._emit(ek.SERVE_BACKEND_EJECTED, backend=up.name, reason=reason, hard=True)

    def _trip(self, up: Upstream, reason: str, *, hard: bool) -> None:
        open_s = up.breaker.trip()
        if hard:
            # Refused or silent: the process is gone or stuck. Its rejoin is gated on an
            # active probe, not on a half_open trial with a real request, so no client
            # request is routed to it again until it answers /health.
            up.needs_probe = True
        up.metrics.ejections.inc()
        up.down_reason = reason
        up.ejected_at = self.clock()
        self._emit(
            ek.SERVE_BACKEND_EJECTED,
            backend=up.name,
            reason=reason,
            open_s=round(open_s, 3),
            hard=hard,
            trips=up.breaker.trips,
        )

    def _restored(self, up: Upstream, *, via: str) -> None:
        if up.wrong:
            return  # up again, but golden probes still hold it out: only they restore it
        self.cap.restore(up.name)
        out_s = self.clock() - up.ejected_at if up.ejected_at else 0.0
        up.down_reason = ""
        self._emit(
            ek.SERVE_BACKEND_RESTORED,
            backend=up.name,
            via=via,
            out_s=round(out_s, 3),
        )
        self.on_recover()

    def probe_result(self, up: Upstream, ok: bool, detail: str = "", rtt_s: float = 0.0) -> None:
        """An active health probe finished. A passing probe's round trip is blended into
        the latency EWMA (time-weighted, so it only pulls down a value that has gone
        unrefreshed): a backend that was slow once is not starved by P2C forever, it gets
        a request again and earns a fresh sample."""
        if ok:
            if up.latency.value > rtt_s:
                up.latency.peak = False
                up.latency.update(rtt_s)
                up.latency.peak = True
            if up.needs_probe:
                up.needs_probe = False
                up.breaker.reset()
                if not up.wrong and self.hold_rejoin(up):
                    up.wrong = REJOINING  # up, but not yet known to answer right
                self._restored(up, via="probe")
            elif up.breaker.probe_ok():
                self.on_recover()
            return
        if up.breaker.state == "closed" and not up.needs_probe:
            up.breaker.record_failure(hard=True)
            self._trip(up, f"probe failed: {detail}", hard=True)

    def eject_wrong(self, up: Upstream, reason: str) -> bool:
        """Golden probes saw ``up`` answer 200 but wrongly: hold it out, within the
        ejection cap, until ``restore_right``. False when the cap refused (or it was
        out for that already)."""
        if up.wrong == REJOINING:
            up.wrong = ""  # it was only waiting: now it is judged, within the cap
        if up.wrong:
            return False
        size = sum(1 for u in self.upstreams.values() if u.spec.tier == up.spec.tier)
        if not self.cap.try_eject(up.name, size):
            return False
        up.wrong = reason
        up.down_reason = reason
        up.ejected_at = self.clock()
        up.metrics.ejections.inc()
        self._emit(ek.SERVE_BACKEND_EJECTED, backend=up.name, reason=reason, hard=False)
        return True

    def restore_right(self, up: Upstream) -> None:
        """``up`` answered golden probes right again: it may rejoin (if nothing else holds
        it out)."""
        if up.wrong:
            up.wrong = ""
            self._restored(up, via="golden")

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            service=self.service,
            tiers=tuple(tuple(u.name for u in tier) for tier in self.tiers),
            upstreams=tuple(u.statistics() for u in self.upstreams.values()),
            ejection_cap=self.cap.statistics(),
        )

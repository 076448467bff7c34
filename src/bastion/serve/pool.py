"""The backend pool: each backend's live state, tiers, and routing by power of two choices.

Owns: ``Upstream`` (one backend endpoint with its breaker, adaptive limit, peak-EWMA
latency and outstanding count) and ``Pool`` (tiers of upstreams, the ejection cap, and
``pick``). Routing is P2C over a score of (outstanding + 1) * latency EWMA, as Finagle
and Linkerd do: two random candidates, the less loaded wins, so no global scan and no
herd onto one "best" backend. ``pick(exclude=...)`` never returns a backend already tried
by this request (a retry always goes elsewhere; Envoy's previous_hosts, #2259, is opt-in
there and built in here). Tiers are tried in order: a fallback tier is used only when
every upstream of the tiers before it is unavailable or already tried.

Rejoining: after a hard failure (refused, timed out, failed probe) an upstream is marked
``needs_probe`` and gets no request until an active probe passes (then its breaker is
reset); after soft failures (5xx, malformed) it rejoins through a half_open trial, since
a health probe cannot see a bad inference answer.

Must never: do I/O or await; emit per-request events (only state changes go to the sink).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.resilience import AdaptiveLimit, CircuitBreaker, EjectionCap, Ewma, monotonic
from bastion.resilience._clock import Clock
from bastion.serve.metrics import BackendMetrics

__all__ = ["FAILURE_PENALTY_S", "Pool", "Upstream", "UpstreamSpec"]

FAILURE_PENALTY_S = 0.05


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


class Upstream:
    """One backend endpoint and everything the gateway knows about it."""

    __slots__ = (
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
    )

    def __init__(self, spec: UpstreamSpec, metrics: BackendMetrics, clock: Clock) -> None:
        self.spec = spec
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
        self.auth_header = f"Bearer {spec.api_key}" if spec.api_key else None

    @property
    def name(self) -> str:
        return self.spec.name

    def routable(self) -> bool:
        return (
            not self.needs_probe
            and self.limit.inflight < self.limit.limit
            and self.breaker.available()
        )

    def score(self) -> float:
        return (self.outstanding + 1) * (self.latency.value or 1e-4)

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.spec.group,
            "tier": self.spec.tier,
            "url": self.spec.url,
            "kind": self.spec.kind,
            "outstanding": self.outstanding,
            "latency_ewma_ms": round(self.latency.value * 1e3, 3),
            "down_reason": self.down_reason,
            "needs_probe": self.needs_probe,
            "last_sent_mono": self.last_sent,
            "ejected_at_mono": self.ejected_at,
            "breaker": self.breaker.statistics(),
            "limit": self.limit.statistics(),
        }


Emit = Callable[..., None]


class Pool:
    """Tiers of upstreams with P2C routing and capped outlier ejection."""

    def __init__(
        self,
        service: str,
        *,
        max_ejected: float = 0.5,
        emit: Emit | None = None,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.clock = clock
        self.cap = EjectionCap(max_fraction=max_ejected)
        self.upstreams: dict[str, Upstream] = {}
        self.tiers: list[list[Upstream]] = []
        self._emit = emit or (lambda *a, **k: None)
        self._rng = rng or random.Random()
        self.on_recover: Callable[[], None] = lambda: None

    # -- membership ---------------------------------------------------------------------
    def add(self, upstream: Upstream) -> None:
        self.upstreams[upstream.name] = upstream
        self._rebuild()

    def remove(self, name: str) -> Upstream | None:
        up = self.upstreams.pop(name, None)
        self.cap.restore(name)
        self._rebuild()
        return up

    def _rebuild(self) -> None:
        tiers: dict[int, list[Upstream]] = {}
        for up in self.upstreams.values():
            tiers.setdefault(up.spec.tier, []).append(up)
        self.tiers = [tiers[k] for k in sorted(tiers)]

    # -- routing --------------------------------------------------------------------------
    def pick(self, exclude: tuple[Upstream, ...] = ()) -> Upstream | None:
        """The upstream for the next attempt, or None when no tier has capacity now."""
        rng = self._rng
        for tier in self.tiers:
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

    def has_untried(self, exclude: tuple[Upstream, ...]) -> bool:
        """Is some upstream not yet tried that could become usable (not hard-down)?"""
        return any(u not in exclude and u.breaker.available() for u in self.upstreams.values())

    # -- health -----------------------------------------------------------------------------
    def fail(self, up: Upstream, *, hard: bool, reason: str) -> None:
        """An attempt on ``up`` failed: maybe eject it (hard failures bypass the cap)."""
        up.metrics.errors.inc()
        # A fast failure must not look like a fast backend (the "black hole" of
        # least-latency routing): count it as a slow sample, which peak EWMA takes at once.
        up.latency.update(max(up.latency.value * 4.0, FAILURE_PENALTY_S))
        if not up.breaker.record_failure(hard=hard):
            return
        if up.breaker.state == "closed" and not hard:
            size = sum(1 for u in self.upstreams.values() if u.spec.tier == up.spec.tier)
            if not self.cap.try_eject(up.name, size):
                return
        self._trip(up, reason, hard=hard)

    def hold(self, up: Upstream, seconds: float, reason: str) -> None:
        """Keep ``up`` out for ``seconds`` (a vendor's 429 with or without Retry-After)."""
        up.metrics.errors.inc()
        up.breaker.state = "open"
        up.breaker.open_until = max(up.breaker.open_until, self.clock() + seconds)
        if not up.down_reason:
            up.down_reason = reason
            up.ejected_at = self.clock()
            up.metrics.ejections.inc()
            self._emit(
                "serve.backend.ejected",
                self.service,
                backend=up.name,
                reason=reason,
                open_s=round(seconds, 3),
                hard=False,
            )

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
            "serve.backend.ejected",
            self.service,
            backend=up.name,
            reason=reason,
            open_s=round(open_s, 3),
            hard=hard,
            trips=up.breaker.trips,
        )

    def succeed(self, up: Upstream) -> None:
        if up.breaker.record_success():
            self._restored(up, via="trial")

    def _restored(self, up: Upstream, *, via: str) -> None:
        self.cap.restore(up.name)
        out_s = self.clock() - up.ejected_at if up.ejected_at else 0.0
        up.down_reason = ""
        self._emit(
            "serve.backend.restored",
            self.service,
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
                self._restored(up, via="probe")
            elif up.breaker.probe_ok():
                self.on_recover()
            return
        if up.breaker.state == "closed" and not up.needs_probe:
            up.breaker.record_failure(hard=True)
            self._trip(up, f"probe failed: {detail}", hard=True)

    def statistics(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "tiers": [[u.name for u in tier] for tier in self.tiers],
            "upstreams": [u.statistics() for u in self.upstreams.values()],
            "ejection_cap": self.cap.statistics(),
        }

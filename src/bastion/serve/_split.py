"""How a gateway asks a traffic split (a rollout) where one request goes.

Owns: ``Assignment`` (one request's arms, in the order its attempts may use them; the
arm whose first attempt is measured, and under which label; whether a copy is mirrored
to the candidate) and ``Split``, the protocol the gateway calls. ``bastion.rollout``
implements it; the gateway only routes, times and hands over answers, so it never
imports the rollout (the rollout builds on serving, not the other way round).

Must never: do I/O or block (``assign`` and ``record`` run on the gateway's event loop,
on the request path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bastion.serve.pool import Upstream

__all__ = ["ArmStatistics", "Assignment", "Split", "SplitStatistics"]


@dataclass(frozen=True, slots=True)
class ArmStatistics:
    """One arm of a rollout in the current step, as the analysis sees it.

    Attributes:
        requests: measured first attempts.
        errors: of those, failed (5xx, timeout, refused, broken answer).
        p50_ms: median latency of the successful ones (None before any).
        p99_ms: their 99th percentile (None before any).
    """

    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class SplitStatistics:
    """A rollout at one moment, as ``/bastion/status`` shows it.

    Attributes:
        id: the rollout's id.
        strategy: canary, shadow or blue-green.
        backend: the manifest backend whose model it replaces.
        candidate: the candidate's snapshot ref (``model/digits@7``).
        stable: the stable model's snapshot ref at the start.
        status: starting, running, promoted, rolled_back or aborted.
        step: the index of the current step in ``steps``.
        steps: the planned candidate shares, in percent.
        weight: the candidate's share of traffic now, in percent (for shadow: the share
            mirrored to it).
        looks: analyses so far.
        extensions: intervals the current step was extended for insufficient evidence.
        reason: why it ended, or why it holds.
        arms: ``candidate`` and ``baseline`` in the current step.
        last_verdict: the newest analysis, as its event records it.
        mirrored: copies sent to the candidate (shadow, blue-green's check).
        agreement: the share of mirrored copies whose answer agreed with the client's.
    """

    id: str
    strategy: str
    backend: str
    candidate: str
    stable: str
    status: str
    step: int
    steps: tuple[float, ...]
    weight: float
    looks: int
    extensions: int
    reason: str
    arms: dict[str, ArmStatistics] = field(default_factory=dict)
    last_verdict: dict[str, Any] | None = None
    mirrored: int = 0
    agreement: float | None = None


@dataclass(slots=True)
class Assignment:
    """Where one request goes.

    Attributes:
        arms: the pool's arms its attempts may use, in order (``("candidate", "stable")``:
            the candidate first, the stable set if the candidate cannot answer).
        arm: the arm whose first attempt is measured.
        label: what that measurement counts as (``candidate`` or ``baseline``), or None
            for a request the analysis does not see.
        mirror: also send a copy to the candidate, and discard its answer (shadow).
        pending: the first attempt is still to be made (the gateway clears it).
    """

    arms: tuple[str, ...]
    arm: str = "stable"
    label: str | None = None
    mirror: bool = False
    pending: bool = True


class Split(Protocol):
    """A traffic split the gateway consults for every request while it is set."""

    def assign(self, headers: Mapping[str, str], remote: str | None) -> Assignment:
        """Where the request with these headers, from this client address, goes."""
        ...

    def record(
        self, assignment: Assignment, ok: bool, elapsed_s: float, body: bytes | None
    ) -> None:
        """The measured first attempt ended: ``ok`` (no 5xx, timeout or broken answer),
        after ``elapsed_s``, answering ``body`` (None on a failure or a 4xx)."""
        ...

    def mirror_to(self) -> Upstream | None:
        """The candidate upstream a mirrored copy goes to now, or None (no room)."""
        ...

    def mirrored(
        self, ok: bool, elapsed_s: float, body: bytes | None, primary: bytes | None
    ) -> None:
        """A mirrored copy's answer (discarded by the gateway), beside the answer the
        client got (``primary``)."""
        ...

    def statistics(self) -> SplitStatistics:
        """Where the rollout stands."""
        ...

"""The readiness score: a weighted mean of parts, each a share in [0, 1], shown as 0-100.

Owns: ``Part`` (one part of the score, its evidence and its freshness), ``score`` and
``verdict_passes`` (the one rule deciding whether a drill counts as a pass).

Must never: answer outside [0, 100] (LitmusChaos once reported a score above 100%,
litmus#3573), whatever the parts say (a NaN, a negative weight, a share above 1); count a
part with no evidence, or stale evidence, as anything but 0; count an errored, aborted or
unfinished experiment as a pass (litmus-go PR#645 reported 100% probe success on an
errored one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PASS", "VERDICTS", "Part", "score", "verdict_passes"]

PASS = "pass"  # noqa: S105 - a verdict, not a password
VERDICTS = ("pass", "fail", "aborted", "error", "unfinished", "skipped")
"""A drill's verdict: only ``pass`` passes. ``fail``: it ran and the steady state did not
hold, or a target was missed; ``aborted``: an abort condition or a signal stopped it;
``error``: it could not run as written (refused fault, invalid, a crashed activity);
``unfinished``: it started and never said it finished; ``skipped``: the reference suite
found the scenario does not apply to this system (its reason says why): it is shown, and
left out of the score's count, neither a pass nor a failure."""


def verdict_passes(verdict: str) -> bool:
    return verdict == PASS


@dataclass(frozen=True)
class Part:
    """One part of the score.

    Attributes:
        id, title: what it measures.
        weight: its weight in the mean (negative or NaN counts as 0).
        value: the share that passed, 0..1; None when there is no evidence.
        passed, total: the counts behind ``value``.
        fresh_at: Unix time of the part's oldest evidence that counts (None: none).
        stale: the evidence is older than the report's ``max_age_s``: it counts as 0.
        evidence: the event ids it came from.
    """

    id: str
    title: str
    weight: float
    value: float | None
    passed: int = 0
    total: int = 0
    fresh_at: float | None = None
    stale: bool = False
    evidence: tuple[int, ...] = field(default_factory=tuple)

    @property
    def counted(self) -> float:
        """The share this part contributes: 0 without evidence or when stale."""
        v = self.value
        if v is None or self.stale or not math.isfinite(v):
            return 0.0
        return min(1.0, max(0.0, v))

    @property
    def usable_weight(self) -> float:
        w = self.weight
        return w if math.isfinite(w) and w > 0 else 0.0


def score(parts: Sequence[Part]) -> float:
    """The weighted mean of the parts' counted shares, times 100, rounded to 0.1."""
    total = sum(p.usable_weight for p in parts)
    if not total > 0 or not math.isfinite(total):
        return 0.0
    mean = sum(p.usable_weight / total * p.counted for p in parts)
    return round(min(100.0, max(0.0, 100.0 * mean)), 1)

"""Ejection cap: outlier detection may eject at most ``max_fraction`` of a pool.

Owns: the set of members ejected for *statistical* reasons (5xx rates, consecutive
errors). One bad threshold or a shared downstream fault would otherwise eject every
backend and turn a partial outage into a full one (Envoy's max_ejection_percent; LiteLLM
never cools down a model group's only deployment for the same reason). At least one
member may always be ejected, so a pool of two can lose its bad half.

Hard failures (refused connections, timeouts, failed probes) are not outlier decisions:
the gateway marks such a backend down whatever this cap says, because traffic sent to a
dead process fails for certain.

Must never: eject by itself; the caller asks ``try_eject`` and acts on the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EjectionCap", "EjectionCapStatistics"]


@dataclass(frozen=True, slots=True)
class EjectionCapStatistics:
    """Who is ejected for statistical reasons, and how often the cap said no.

    Attributes:
        ejected: members ejected by outlier rules now, sorted (hard failures are not here).
        max_fraction: the share of a pool that may be ejected at once.
        denied: ejections refused because the cap was reached.
    """

    ejected: tuple[str, ...]
    max_fraction: float
    denied: int


class EjectionCap:
    __slots__ = ("denied", "ejected", "max_fraction")

    def __init__(self, *, max_fraction: float = 0.5) -> None:
        if not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.ejected: set[str] = set()
        self.denied = 0

    def limit(self, pool_size: int) -> int:
        return max(1, math.floor(pool_size * self.max_fraction + 1e-9))

    def try_eject(self, member: str, pool_size: int) -> bool:
        if member in self.ejected:
            return True
        if len(self.ejected) >= self.limit(pool_size):
            self.denied += 1
            return False
        self.ejected.add(member)
        return True

    def restore(self, member: str) -> None:
        self.ejected.discard(member)

    def statistics(self) -> EjectionCapStatistics:
        return EjectionCapStatistics(
            ejected=tuple(sorted(self.ejected)),
            max_fraction=self.max_fraction,
            denied=self.denied,
        )

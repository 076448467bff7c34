"""What a gate concludes: a ``Status`` and the ``Finding`` records that justify it.

Owns: the three outcomes every gate shares (``passed``, ``failed``,
``insufficient_evidence``), how findings combine into one of them, and the exit code
each maps to on the command line.

Must never: turn missing evidence into a pass. ``insufficient_evidence`` is its own
outcome, and any failure outranks it: a gate that found a problem fails even when it
also lacked evidence elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Finding", "Status", "combine"]


class Status(StrEnum):
    """A gate's outcome. Only ``PASSED`` lets an artifact through."""

    PASSED = "passed"
    FAILED = "failed"
    #: the gate could not decide: too few rows or examples, an empty set, nothing to
    #: compare; never read as a pass
    INSUFFICIENT = "insufficient_evidence"

    @property
    def exit_code(self) -> int:
        """0 passed; 1 otherwise (a check ran and did not let the artifact through)."""
        return 0 if self is Status.PASSED else 1


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a gate did not pass.

    ``check`` names the rule in dotted form (``schema.columns``, ``schema.range``,
    ``drift``, ``labels.agreement``, ``leakage``, ``model.weights``, ``metric``);
    ``column`` the column, metric or set it concerns (empty for the whole table);
    ``status`` is ``failed`` or ``insufficient_evidence``; ``data`` holds the numbers.
    """

    check: str
    message: str
    column: str = ""
    status: Status = Status.FAILED
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "column": self.column,
            "status": str(self.status),
            "message": self.message,
            "data": dict(self.data),
        }


def combine(findings: Iterable[Finding]) -> Status:
    """``failed`` if any finding failed, else ``insufficient_evidence`` if any lacked
    evidence, else ``passed``."""
    statuses = {f.status for f in findings}
    if Status.FAILED in statuses:
        return Status.FAILED
    if Status.INSUFFICIENT in statuses:
        return Status.INSUFFICIENT
    return Status.PASSED

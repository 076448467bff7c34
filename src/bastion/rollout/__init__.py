"""Safe rollout of models: canary, shadow and blue-green steps, judged by statistics.

``judge`` compares a candidate arm with the baseline arm that got the same share of
traffic at the same time and says ``pass``, ``fail``, ``continue`` or ``insufficient``
(see docs/rollout.md, "Analysis").
"""

from __future__ import annotations

from bastion.rollout._analysis import (
    CHECK_NAMES,
    AnalysisSettings,
    ArmSample,
    Check,
    Outcome,
    Verdict,
    judge,
)

__all__ = [
    "CHECK_NAMES",
    "AnalysisSettings",
    "ArmSample",
    "Check",
    "Outcome",
    "Verdict",
    "judge",
]

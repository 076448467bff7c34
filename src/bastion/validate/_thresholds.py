"""Metric thresholds with MLflow's ``MetricThreshold`` semantics, judged on bounds.

Owns: ``MetricThreshold`` and its three criteria, each turned into a *margin* that is
at least 0 exactly when MLflow's rule holds (greater is better; the other way round the
inequalities flip):

- ``threshold`` t: candidate >= t;
- ``min_absolute_change`` a: candidate >= baseline + a;
- ``min_relative_change`` r: candidate >= baseline * (1 + r).

The model gate computes each margin on every bootstrap replicate and passes a criterion
only when the lower end of the interval is at least 0: the improvement's lower bound
clears the required change. Two extensions of MLflow, both explicit: a negative
``min_absolute_change`` (or ``min_relative_change``) is a non-inferiority margin ("no
worse than the baseline by more than a, at 95 %"), and a threshold is judged on the
interval's bound as well, not the point estimate.

Must never: compare with a baseline that is not there (a change criterion without one
is a ``UsageError``), or pass a NaN margin (NaN is never >= 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.errors import UsageError

__all__ = ["CRITERIA", "MetricThreshold"]

#: the criteria, in the order they are reported
CRITERIA = ("threshold", "min_absolute_change", "min_relative_change")


@dataclass(frozen=True, slots=True)
class MetricThreshold:
    """What a metric must reach (see the module). ``greater_is_better`` as in MLflow."""

    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        given = {c: getattr(self, c) for c in CRITERIA if getattr(self, c) is not None}
        if not given:
            raise UsageError(
                "a metric threshold needs at least one of threshold, min_absolute_change, "
                "min_relative_change"
            )
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"{name}: {value!r} is not a number")
            if not math.isfinite(value):
                raise UsageError(f"{name}: {value!r} must be finite")
        if self.min_relative_change is not None and not self.min_relative_change > -1:
            raise UsageError(
                f"min_relative_change {self.min_relative_change} must be above -1 "
                "(0.05: 5 % better than the baseline; -0.05: at most 5 % worse)"
            )

    @property
    def needs_baseline(self) -> bool:
        return self.min_absolute_change is not None or self.min_relative_change is not None

    def criteria(self) -> list[tuple[str, float]]:
        return [(c, float(getattr(self, c))) for c in CRITERIA if getattr(self, c) is not None]

    def margin(
        self, criterion: str, candidate: np.ndarray, baseline: np.ndarray | None
    ) -> np.ndarray:
        """Per replicate: >= 0 where MLflow's rule for ``criterion`` holds."""
        sign = 1.0 if self.greater_is_better else -1.0
        if criterion != "threshold" and baseline is None:
            raise UsageError(f"{criterion} compares with a baseline; give one (--against)")
        out: np.ndarray
        if criterion == "threshold":
            out = sign * (candidate - float(self.threshold or 0.0))
        elif criterion == "min_absolute_change":
            assert baseline is not None
            out = sign * (candidate - baseline) - float(self.min_absolute_change or 0.0)
        else:
            assert baseline is not None
            r = float(self.min_relative_change or 0.0)
            out = sign * (candidate - baseline * (1 + sign * r))
        return out

    def statistic(
        self, criterion: str, candidate: np.ndarray, baseline: np.ndarray | None
    ) -> np.ndarray:
        """What a person reads beside the margin: the candidate's value (threshold), its
        improvement over the baseline (absolute), or that improvement over the
        baseline's magnitude (relative). An improvement is positive when better."""
        sign = 1.0 if self.greater_is_better else -1.0
        if criterion == "threshold" or baseline is None:
            return candidate
        improvement: np.ndarray = sign * (candidate - baseline)
        if criterion == "min_absolute_change":
            return improvement
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = improvement / np.abs(baseline)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "min_absolute_change": self.min_absolute_change,
            "min_relative_change": self.min_relative_change,
            "greater_is_better": self.greater_is_better,
        }

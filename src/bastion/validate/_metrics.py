"""A model's answers on an evaluation set, and the metrics computed from them.

Owns: ``Evaluation`` (per example: the true class, the predicted class, the probability
given to the true class, whether the outputs were finite) and ``METRICS``, the metrics
the model gate knows, each a mean of one value per example so that a bootstrap
replicate is a mean over resampled examples: ``accuracy`` (greater is better),
``error_rate`` and ``log_loss`` (lower is better).

Must never: make a metric look fine when outputs were not finite. An example whose
outputs are not finite contributes NaN, so the metric is NaN and no threshold passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bastion.errors import UsageError

__all__ = ["METRICS", "Evaluation", "Metric"]

_EPS = 1e-15  # log loss clips probabilities here, as scikit-learn does


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One model on one evaluation set (``name``: ``holdout``, ``golden``).

    ``truth``: the class index of each example's label in the model's class list (-1 for
    a label the model does not know); ``predicted``: the model's class index (-1 where its
    outputs are not finite); ``true_probability``: the probability it gave the true
    class (0 for an unknown label, NaN where outputs are not finite).
    """

    name: str
    truth: np.ndarray
    predicted: np.ndarray
    true_probability: np.ndarray
    finite: np.ndarray

    def __post_init__(self) -> None:
        n = self.truth.shape[0]
        for field in ("predicted", "true_probability", "finite"):
            if getattr(self, field).shape != (n,):
                raise UsageError(f"evaluation {self.name}: {field} must have {n} entries")

    @property
    def examples(self) -> int:
        return int(self.truth.shape[0])

    @property
    def nonfinite(self) -> int:
        return int((~self.finite).sum())


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric as the mean of ``per_example`` over the examples."""

    name: str
    greater_is_better: bool
    per_example: Callable[[Evaluation], np.ndarray]

    def value(self, evaluation: Evaluation) -> float:
        values = self.per_example(evaluation)
        return float(values.mean()) if values.size else float("nan")


def _correct(e: Evaluation) -> np.ndarray:
    out: np.ndarray = np.where(e.finite, (e.predicted == e.truth).astype(np.float64), np.nan)
    return out


def _wrong(e: Evaluation) -> np.ndarray:
    out: np.ndarray = 1.0 - _correct(e)
    return out


def _log_loss(e: Evaluation) -> np.ndarray:
    p = np.clip(e.true_probability, _EPS, 1.0)
    out: np.ndarray = np.where(e.finite, -np.log(p), np.nan)
    return out


#: every metric the gate knows, by name
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, _correct),
        Metric("error_rate", False, _wrong),
        Metric("log_loss", False, _log_loss),
    )
}

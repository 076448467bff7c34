"""The model gate: may this candidate replace the baseline?

Owns: ``check_model``. A candidate fails when any of its weights is not finite, when any
of its outputs on an evaluation set is not finite, or when a metric criterion is not met
on some set; it lacks evidence when a set has fewer than ``min_examples`` examples (an
empty golden set never passes). Each criterion (``_thresholds``) is judged on a seeded
paired bootstrap (``_bootstrap``): the candidate passes it only when the lower bound of
the ``level`` interval of the margin is at least 0, so a gain within noise is not a
gain, and a verdict is reproducible bit for bit.

Must never: load models or read the vault (``_models`` and ``_snapshots`` do), or let a
NaN metric pass: it fails, saying which model's outputs made it NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.errors import UsageError
from bastion.validate._bootstrap import bootstrap_means, interval
from bastion.validate._metrics import METRICS, Evaluation
from bastion.validate._thresholds import MetricThreshold
from bastion.validate._verdict import Finding, Status, combine

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CriterionResult",
    "ModelGateConfig",
    "ModelVerdict",
    "check_model",
]

#: no worse than the baseline by more than 2 accuracy points, at 95 % (see docs/validate.md)
DEFAULT_THRESHOLDS: Mapping[str, MetricThreshold] = {
    "accuracy": MetricThreshold(min_absolute_change=-0.02, greater_is_better=True)
}


@dataclass(frozen=True, slots=True)
class ModelGateConfig:
    """``thresholds``: metric name -> ``MetricThreshold``, applied on every set.
    ``replicates``, ``seed``, ``level``: the bootstrap. ``min_examples``: a set with
    fewer examples gives ``insufficient_evidence``."""

    thresholds: Mapping[str, MetricThreshold] = field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS)
    )
    replicates: int = 2000
    seed: int = 0
    level: float = 0.95
    min_examples: int = 20

    def __post_init__(self) -> None:
        if not self.thresholds:
            raise UsageError("the model gate needs at least one metric threshold")
        for name, rule in self.thresholds.items():
            metric = METRICS.get(name)
            if metric is None:
                raise UsageError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
            if rule.greater_is_better != metric.greater_is_better:
                raise UsageError(
                    f"{name}: {'greater' if metric.greater_is_better else 'lower'} is better; "
                    f"the threshold says greater_is_better={rule.greater_is_better}"
                )
        if self.replicates < 100:
            raise UsageError(f"replicates {self.replicates}: use at least 100 (default 2000)")
        if not 0.5 < self.level < 1:
            raise UsageError(f"level {self.level} must be between 0.5 and 1 (default 0.95)")
        if self.min_examples < 1:
            raise UsageError("min_examples must be at least 1")

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": {k: v.to_json() for k, v in sorted(self.thresholds.items())},
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "min_examples": self.min_examples,
        }


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One criterion of one metric on one set.

    ``estimate``, ``low``, ``high``: the statistic a person reads (the candidate's value
    for ``threshold``; the improvement over the baseline, positive when better, for
    ``min_absolute_change``; that over the baseline's magnitude for
    ``min_relative_change``) and its interval; ``required`` the bar it must clear;
    ``margin_low`` the decisive number: the interval's lower end of the margin (>= 0
    passes).
    """

    set: str
    metric: str
    criterion: str
    required: float
    greater_is_better: bool
    candidate: float
    baseline: float | None
    estimate: float
    low: float
    high: float
    margin_low: float
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "metric": self.metric,
            "criterion": self.criterion,
            "required": self.required,
            "greater_is_better": self.greater_is_better,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "margin_low": self.margin_low,
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    """The gate's outcome: ``status``, the ``findings`` behind it, every criterion's
    result, and per set the examples and each model's metrics."""

    status: Status
    findings: tuple[Finding, ...]
    criteria: tuple[CriterionResult, ...]
    sets: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "findings": [f.to_json() for f in self.findings],
            "criteria": [c.to_json() for c in self.criteria],
            "sets": {k: dict(v) for k, v in self.sets.items()},
        }


def _pair(candidate: Evaluation, baseline: Evaluation) -> None:
    if candidate.examples != baseline.examples:
        raise UsageError(
            f"{candidate.name}: the candidate and the baseline were not evaluated on the same "
            "examples (a paired comparison needs the same rows in the same order)"
        )


def _nan_reason(metric: str, cand: float, base: float | None) -> str:
    if math.isnan(cand):
        return f"the candidate's {metric} is NaN (its outputs are not finite)"
    if base is not None and math.isnan(base):
        return f"the baseline's {metric} is NaN (its outputs are not finite): nothing to compare"
    return f"{metric} could not be computed"


def _describe(r: CriterionResult, level: float) -> str:
    pct = f"{round(100 * level)} %"
    if r.criterion == "threshold":
        side = "lower" if r.greater_is_better else "upper"
        bound = r.low if r.greater_is_better else r.high
        op = ">=" if r.greater_is_better else "<="
        return (
            f"{r.set}: {r.metric} {r.candidate:.4g}, {pct} interval [{r.low:.4g}, {r.high:.4g}]; "
            f"its {side} bound {bound:.4g} must be {op} {r.required:g}"
        )
    what = "improvement" if r.criterion == "min_absolute_change" else "relative improvement"
    return (
        f"{r.set}: {r.metric} {r.candidate:.4g} vs baseline {r.baseline:.4g}; {what} "
        f"{r.estimate:+.4g}, {pct} interval [{r.low:+.4g}, {r.high:+.4g}]; its lower bound "
        f"must be >= {r.required:+g}"
    )


def check_model(
    candidate: Sequence[Evaluation],
    baseline: Sequence[Evaluation] | None = None,
    *,
    config: ModelGateConfig | None = None,
    nonfinite_weights: Mapping[str, int] | None = None,
) -> ModelVerdict:
    """Judge ``candidate``'s evaluations (one per set) against ``baseline``'s (the same
    sets, the same examples) under ``config``. ``nonfinite_weights``: per tensor of the
    candidate, how many weights are NaN or infinite."""
    cfg = config or ModelGateConfig()
    needs_baseline = any(t.needs_baseline for t in cfg.thresholds.values())
    base_of = {e.name: e for e in baseline or ()}
    if needs_baseline and baseline is None:
        raise UsageError(
            "a min_absolute_change or min_relative_change compares with a baseline; give one "
            "(--against model/NAME@prod), or use only threshold"
        )
    if not candidate:
        raise UsageError("the model gate needs at least one evaluation set")
    findings: list[Finding] = []
    bad = {k: v for k, v in (nonfinite_weights or {}).items() if v}
    if bad:
        findings.append(
            Finding(
                "model.weights",
                f"{sum(bad.values()):,} weights are NaN or infinite (in "
                f"{', '.join(sorted(bad)[:5])})",
                data={"tensors": dict(sorted(bad.items()))},
            )
        )
    criteria: list[CriterionResult] = []
    sets: dict[str, dict[str, Any]] = {}
    for evaluation in candidate:
        name = evaluation.name
        base = base_of.get(name)
        if needs_baseline and base is None:
            raise UsageError(f"{name}: the baseline has no evaluation on this set")
        if base is not None:
            _pair(evaluation, base)
        summary: dict[str, Any] = {
            "examples": evaluation.examples,
            "nonfinite_outputs": evaluation.nonfinite,
            "candidate": {m: METRICS[m].value(evaluation) for m in sorted(cfg.thresholds)},
        }
        if base is not None:
            summary["baseline"] = {m: METRICS[m].value(base) for m in sorted(cfg.thresholds)}
            summary["baseline_nonfinite_outputs"] = base.nonfinite
        sets[name] = summary
        if evaluation.nonfinite:
            findings.append(
                Finding(
                    "model.outputs",
                    f"{name}: the candidate's outputs are NaN or infinite on "
                    f"{evaluation.nonfinite:,} of {evaluation.examples:,} examples",
                    name,
                    data={"examples": evaluation.nonfinite},
                )
            )
        if evaluation.examples < cfg.min_examples:
            findings.append(
                Finding(
                    "model.examples",
                    f"{name}: {evaluation.examples:,} examples; a gate needs at least "
                    f"{cfg.min_examples} to judge (an empty set never passes)",
                    name,
                    Status.INSUFFICIENT,
                    data={"examples": evaluation.examples, "min_examples": cfg.min_examples},
                )
            )
            continue
        criteria.extend(_judge(evaluation, base, cfg, findings))
    return ModelVerdict(combine(findings), tuple(findings), tuple(criteria), sets)


def _judge(
    evaluation: Evaluation,
    base: Evaluation | None,
    cfg: ModelGateConfig,
    findings: list[Finding],
) -> list[CriterionResult]:
    names = sorted(cfg.thresholds)
    series = [METRICS[m].per_example(evaluation) for m in names]
    if base is not None:
        series += [METRICS[m].per_example(base) for m in names]
    means = bootstrap_means(series, replicates=cfg.replicates, seed=cfg.seed, name=evaluation.name)
    out = []
    for i, metric in enumerate(names):
        rule = cfg.thresholds[metric]
        cand_samples = means[i]
        base_samples = means[len(names) + i] if base is not None else None
        cand_value = float(series[i].mean())
        base_value = float(series[len(names) + i].mean()) if base is not None else None
        for criterion, required in rule.criteria():
            uses_base = criterion != "threshold"
            b = base_samples if uses_base else None
            margin_low, _ = interval(rule.margin(criterion, cand_samples, b), cfg.level)
            low, high = interval(rule.statistic(criterion, cand_samples, b), cfg.level)
            point = rule.statistic(
                criterion,
                np.array([cand_value]),
                np.array([base_value]) if uses_base and base_value is not None else None,
            )
            result = CriterionResult(
                set=evaluation.name,
                metric=metric,
                criterion=criterion,
                required=required,
                greater_is_better=rule.greater_is_better,
                candidate=cand_value,
                baseline=base_value if uses_base else None,
                estimate=float(point[0]),
                low=low,
                high=high,
                margin_low=margin_low,
                passed=bool(margin_low >= 0),  # NaN >= 0 is False: NaN never passes
            )
            out.append(result)
            if not result.passed:
                reason = (
                    _nan_reason(metric, cand_value, result.baseline)
                    if math.isnan(margin_low)
                    else _describe(result, cfg.level)
                )
                findings.append(
                    Finding(
                        "metric",
                        f"{evaluation.name}: {metric} {criterion}: {reason}"
                        if math.isnan(margin_low)
                        else f"{criterion}: {reason}",
                        f"{evaluation.name}:{metric}",
                        data=result.to_json(),
                    )
                )
    return out

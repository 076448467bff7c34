"""The model gate on evaluations built by hand: MLflow's MetricThreshold rules, judged
on the lower bound of a seeded paired bootstrap; NaN, empty sets and broken weights
never pass. Seeded; the seed is printed."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.errors import UsageError
from bastion.validate import (
    Evaluation,
    MetricThreshold,
    ModelGateConfig,
    Status,
    canonical_json,
    check_model,
)


def _eval(name: str, correct: np.ndarray, *, confidence: float = 0.9) -> Evaluation:
    """An evaluation whose examples are right where ``correct`` says (10 classes)."""
    n = correct.shape[0]
    truth = np.arange(n) % 10
    predicted = np.where(correct, truth, (truth + 1) % 10)
    p_true = np.where(correct, confidence, (1 - confidence) / 9)
    return Evaluation(name, truth, predicted, p_true, np.ones(n, bool))


def _sets(rng: np.random.Generator, accuracy: float, n: int = 1000) -> list[Evaluation]:
    return [
        _eval("holdout", rng.random(n) < accuracy),
        _eval("golden", rng.random(max(n // 10, 20)) < accuracy),
    ]


@pytest.mark.parametrize(
    ("rule", "candidate", "baseline", "holds"),
    [
        # greater is better: value >= threshold; >= baseline + a; >= baseline * (1 + r)
        (MetricThreshold(threshold=0.9), 0.9, None, True),
        (MetricThreshold(threshold=0.9), 0.8999, None, False),
        (MetricThreshold(min_absolute_change=0.05), 0.9, 0.85, True),
        (MetricThreshold(min_absolute_change=0.0501), 0.9, 0.85, False),
        (MetricThreshold(min_relative_change=0.05), 0.8925, 0.85, True),
        (MetricThreshold(min_relative_change=0.05), 0.89, 0.85, False),
        (MetricThreshold(min_absolute_change=-0.02), 0.84, 0.85, True),  # a margin
        # lower is better: value <= threshold; <= baseline - a; <= baseline * (1 - r)
        (MetricThreshold(threshold=0.3, greater_is_better=False), 0.3, None, True),
        (MetricThreshold(threshold=0.3, greater_is_better=False), 0.31, None, False),
        (MetricThreshold(min_absolute_change=0.1, greater_is_better=False), 0.3, 0.4, True),
        (MetricThreshold(min_absolute_change=0.11, greater_is_better=False), 0.3, 0.4, False),
        (MetricThreshold(min_relative_change=0.25, greater_is_better=False), 0.3, 0.4, True),
        (MetricThreshold(min_relative_change=0.26, greater_is_better=False), 0.3, 0.4, False),
    ],
)
def test_mlflow_semantics_of_each_criterion(
    rule: MetricThreshold, candidate: float, baseline: float | None, holds: bool
) -> None:
    ((criterion, _),) = rule.criteria()
    margin = rule.margin(
        criterion,
        np.array([candidate]),
        None if baseline is None else np.array([baseline]),
    )
    assert bool(margin[0] >= -1e-12) is holds


def test_bad_thresholds_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="at least one"):
        MetricThreshold()
    with pytest.raises(UsageError, match="finite"):
        MetricThreshold(threshold=float("nan"))
    with pytest.raises(UsageError, match="above -1"):
        MetricThreshold(min_relative_change=-1.5)
    with pytest.raises(UsageError, match="unknown metric 'f2'"):
        ModelGateConfig(thresholds={"f2": MetricThreshold(threshold=1)})
    with pytest.raises(UsageError, match="lower is better"):
        ModelGateConfig(thresholds={"log_loss": MetricThreshold(threshold=1)})
    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="compares with a baseline"):
        check_model(_sets(rng, 0.9))  # the default compares with a baseline


def test_a_real_improvement_passes_and_a_noisy_one_does_not(seed: int) -> None:
    # The data is fixed: on a small golden set a random draw can make 0.95 vs 0.80 look
    # like noise (seed 3711531118 drew 0.90 vs 0.84), and then failing is the right verdict.
    # The bootstrap's own seed still varies.
    rng = np.random.default_rng(0)
    base = _sets(rng, 0.80)
    strict = ModelGateConfig(
        thresholds={"accuracy": MetricThreshold(min_absolute_change=0.0)}, seed=seed
    )
    better = check_model(_sets(rng, 0.95), base, config=strict)
    assert better.status is Status.PASSED, better.findings
    # the same model as the baseline: the paired difference is 0 on every replicate
    same = check_model(base, base, config=strict)
    assert same.status is Status.PASSED
    assert all(c.low == c.high == 0 for c in same.criteria)
    # right on 10 examples the baseline gets wrong, wrong on 8 it gets right: two more
    # right in all, so MLflow's point rule passes it; the interval's lower bound is below
    # 0, so the gain is noise
    b = base[0]
    flipped = b.predicted.copy()
    fixed = np.flatnonzero(b.predicted != b.truth)[:10]
    broke = np.flatnonzero(b.predicted == b.truth)[:8]
    flipped[fixed] = b.truth[fixed]
    flipped[broke] = (b.truth[broke] + 1) % 10
    lucky = Evaluation("holdout", base[0].truth, flipped, base[0].true_probability, base[0].finite)
    noisy = check_model([lucky, base[1]], base, config=strict)
    holdout = next(c for c in noisy.criteria if c.set == "holdout")
    assert holdout.estimate > 0
    assert holdout.low < 0
    assert noisy.status is Status.FAILED
    assert "lower bound must be >= +0" in noisy.findings[0].message


def test_the_verdict_is_reproducible_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cand, base = _sets(rng, 0.9), _sets(rng, 0.88)
    config = ModelGateConfig(
        thresholds={
            "accuracy": MetricThreshold(min_absolute_change=-0.05, threshold=0.5),
            "log_loss": MetricThreshold(min_relative_change=-0.5, greater_is_better=False),
        },
        seed=seed,
    )
    one = canonical_json(check_model(cand, base, config=config).to_json())
    two = canonical_json(check_model(cand, base, config=config).to_json())
    assert one == two
    other = ModelGateConfig(thresholds=config.thresholds, seed=seed + 1)
    assert canonical_json(check_model(cand, base, config=other).to_json()) != one


def test_nan_outputs_fail_and_a_nan_baseline_cannot_be_beaten(seed: int) -> None:
    rng = np.random.default_rng(seed)
    good = _sets(rng, 0.9)
    broken = [
        Evaluation(e.name, e.truth, e.predicted, e.true_probability, e.finite.copy()) for e in good
    ]
    broken[0].finite[:3] = False
    verdict = check_model(broken, good)
    assert verdict.status is Status.FAILED
    checks = [f.check for f in verdict.findings]
    assert "model.outputs" in checks
    assert "metric" in checks
    assert any("candidate's accuracy is NaN" in f.message for f in verdict.findings)
    # a baseline whose outputs are NaN is not something to compare with: fail, and say so
    verdict = check_model(good, broken)
    assert verdict.status is Status.FAILED
    assert any("baseline's accuracy is NaN" in f.message for f in verdict.findings)


def test_an_empty_or_tiny_set_is_insufficient_evidence(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = _sets(rng, 0.9)
    empty = Evaluation("golden", *(np.empty(0, t) for t in (int, int, float, bool)))
    verdict = check_model([base[0], empty], [base[0], empty])
    assert verdict.status is Status.INSUFFICIENT
    assert verdict.status.exit_code == 1
    assert [f.check for f in verdict.findings] == ["model.examples"]
    tiny = _eval("golden", np.ones(5, bool))
    assert check_model([base[0], tiny], [base[0], tiny]).status is Status.INSUFFICIENT
    # a failure elsewhere outranks the missing evidence
    verdict = check_model([base[0], empty], [base[0], empty], nonfinite_weights={"0.weight": 7})
    assert verdict.status is Status.FAILED


def test_nonfinite_weights_fail_even_when_outputs_look_fine(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = _sets(rng, 0.9)
    verdict = check_model(base, base, nonfinite_weights={"0.weight": 12, "0.bias": 0})
    assert verdict.status is Status.FAILED
    assert verdict.findings[0].check == "model.weights"
    assert "12 weights are NaN or infinite (in 0.weight)" in verdict.findings[0].message

"""Drift: the statistics match scipy's, A/A comparisons stay within alpha, real shifts
are found, and too little data is never a pass. Seeded; the seed is printed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bastion.validate import DriftConfig, Schema, Status, Table, drift, infer_schema
from bastion.validate._drift import _ks, _merge

_CATEGORIES = np.array(["a", "b", "c", "d", "e"], dtype=object)
_WEIGHTS = [0.4, 0.25, 0.15, 0.1, 0.1]


def _table(rng: np.random.Generator, n: int, shift: float = 0.0, *, small: bool = True) -> Table:
    """A number column, a count column (integers: many ties) and a text category; the
    big tables keep the number column and code the category as a class number (a
    label), so that 200 trials of 2 x 100,000 rows stay a few seconds."""
    columns: dict[str, object] = {"x": rng.normal(shift, 1.0, n)}
    codes = np.searchsorted(np.cumsum(_WEIGHTS), rng.random(n)).clip(0, 4)
    if small:
        columns["k"] = rng.poisson(3.0, n).astype(float)
        columns["c"] = _CATEGORIES[codes]
    else:
        columns["label"] = codes
    return Table.from_arrays(columns)  # type: ignore[arg-type]


def _schema(rng: np.random.Generator, *, small: bool = True) -> Schema:
    # Drift reads only each column's kind from the schema, so one serves every trial.
    return infer_schema(_table(rng, 1000, small=small))


@pytest.mark.parametrize(("n", "m"), [(100, 100), (700, 3000), (20_000, 20_000), (40_000, 9_000)])
def test_merge_matches_scipy(seed: int, n: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.sort(rng.normal(0, 1, n).round(1))  # rounded: ties on both sides
    b = np.sort(rng.normal(0.05, 1.2, m).round(1))
    ks, w = _merge(a, b)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert ks == pytest.approx(expected.statistic, abs=1e-12)
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
    d, p = _ks(a, b, ks)
    if max(n, m) > 10_000:  # scipy's asymptotic mode, reproduced without re-sorting
        assert p == pytest.approx(expected.pvalue, rel=1e-6)
    else:
        assert p == pytest.approx(stats.ks_2samp(a, b).pvalue, rel=1e-9)
    assert d == pytest.approx(expected.statistic, abs=1e-12)


# Trials per reference size: enough that the binomial noise of the rate (its standard
# error) stays well under the one point of slack, at a runtime that suits the suite.
_AA = {100: 1000, 1_000: 500, 100_000: 200}


@pytest.mark.parametrize("n", sorted(_AA))
def test_false_positive_rate_of_a_a_trials_stays_within_alpha(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    small = n < 100_000
    schema = _schema(rng, small=small)
    config = DriftConfig(workers=1)
    trials, flagged, significant = _AA[n], 0, 0
    for _ in range(trials):
        ref, cur = _table(rng, n, small=small), _table(rng, n, small=small)
        report = drift(ref, cur, schema, config=config)
        assert report.status is not Status.INSUFFICIENT
        flagged += bool(report.drifted)
        significant += any(c.q_value <= config.alpha for c in report.columns)
    rate = flagged / trials
    print(
        f"n={n}: {flagged}/{trials} A/A trials flagged drift ({100 * rate:.1f} %); "
        f"{significant} had a significant test before the effect-size rule"
    )
    assert rate <= config.alpha + 0.01


def test_power_half_sigma_shift_at_1000_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = _schema(rng)
    trials, found, others = 200, 0, 0
    for _ in range(trials):
        report = drift(_table(rng, 1000), _table(rng, 1000, shift=0.5), schema)
        found += report.column("x").status == "drifted"  # type: ignore[union-attr]
        others += any(c.status == "drifted" for c in report.columns if c.column != "x")
    print(f"0.5 sigma shift at n=1000: found in {found}/{trials}; other columns {others}")
    assert found / trials >= 0.90


def test_a_negligible_shift_on_a_huge_sample_is_significant_but_not_drift(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = _schema(rng, small=False)
    report = drift(
        _table(rng, 200_000, small=False), _table(rng, 200_000, shift=0.03, small=False), schema
    )
    x = report.column("x")
    assert x is not None
    print(f"0.03 sigma at n=200,000: q={x.q_value:.2g}, wasserstein/std={x.effect_size:.3f}")
    assert x.q_value < 0.05  # KS alone would flag it (Evidently's complaint)
    assert x.status == "stable"  # the effect size is a thirtieth of a standard deviation


def test_too_few_rows_is_insufficient_evidence_never_a_pass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = _schema(rng)
    report = drift(_table(rng, 99), _table(rng, 5000), schema)
    assert report.status is Status.INSUFFICIENT
    assert {c.status for c in report.columns} == {"insufficient_evidence"}
    assert all(f.status is Status.INSUFFICIENT for f in report.findings())
    # a drifted column outranks the missing evidence elsewhere
    cur = _table(rng, 1000, shift=2.0)
    few = Table.from_arrays({**cur.columns, "k": np.full(1000, np.nan)})
    report = drift(_table(rng, 1000), few, schema)
    assert report.column("k").status == "insufficient_evidence"  # type: ignore[union-attr]
    assert report.status is Status.FAILED


def test_categorical_shift_and_new_category(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = _schema(rng)
    ref = _table(rng, 5000)
    moved = Table.from_arrays(
        {**_table(rng, 5000).columns, "c": _CATEGORIES[rng.choice(5, 5000, p=[0.1] * 4 + [0.6])]}
    )
    c = drift(ref, moved, schema).column("c")
    assert c is not None
    assert c.status == "drifted"
    assert c.test == "chi2"
    assert c.effects["jensenshannon"] > 0.1


def test_psi_decides_when_asked_and_columns_run_on_threads_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    schema = _schema(rng)
    ref, cur = _table(rng, 60_000), _table(rng, 60_000, shift=0.3)
    one = drift(ref, cur, schema, config=DriftConfig(workers=1, numeric_effect="psi"))
    two = drift(ref, cur, schema, config=DriftConfig(workers=2, numeric_effect="psi"))
    assert one.to_json() == two.to_json()
    x = one.column("x")
    assert x is not None
    assert x.effect == "psi"
    assert x.effect_size == x.effects["psi"]

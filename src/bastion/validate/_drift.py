"""Drift per column between a reference table and a current one.

Owns: the two-sample tests and effect sizes, the multiple-testing correction, and the
rule that joins them. A number column gets the Kolmogorov-Smirnov test plus the
Wasserstein distance over the reference's standard deviation (or PSI); a category column
(and a classification label) gets the chi-squared test of homogeneity plus the
Jensen-Shannon distance (or PSI). A column is *drifted* only when its test is
significant after Benjamini-Hochberg across every tested column **and** its effect size
reaches its threshold: the test alone flags negligible shifts once samples are large,
the effect size alone flags noise when they are small. Below ``min_rows`` values on
either side a column is ``insufficient_evidence``, never stable.

Must never: read files, drop a column silently (an untested column is listed with the
reason), or depend on thread timing (columns are independent, so running them on
several threads gives the same numbers bit for bit).

How the numbers are computed, and why:

- KS: up to 10,000 values a side, ``scipy.stats.ks_2samp`` (its exact distribution).
  Above, the statistic comes from one merge of the two sorted samples, and the p-value
  from ``scipy.stats.kstwo`` at the effective size ``n*m/(n+m)``, which is what scipy's
  own asymptotic mode does: the same result without sorting twice more.
- Wasserstein-1 from the same merge: the integral of |F_ref - F_cur|, over the
  reference's standard deviation, so 0.1 reads as "a tenth of a standard deviation"
  (a constant reference column makes any move infinite).
- PSI over the reference's deciles (numbers) or over the categories, with empty bins
  floored at 1e-4.
- Chi-squared on the 2 x K table of counts; categories whose expected count is below 5
  are pooled first (the test's approximation needs it), so rare categories cannot make
  an A/A comparison look significant.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from bastion.errors import UsageError
from bastion.validate._schema import ColumnSchema, Schema
from bastion.validate._table import Table
from bastion.validate._verdict import Finding, Status

__all__ = ["ColumnDrift", "DriftConfig", "DriftReport", "Reference", "drift"]

_EXACT_MAX = 10_000  # scipy's own limit for its exact KS distribution (MAX_AUTO_N)
_PSI_FLOOR = 1e-4
_MIN_EXPECTED = 5.0
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """The drift rule's knobs (every default is explained in ``docs/validate.md``).

    ``alpha``: the false discovery rate across the tested columns (Benjamini-Hochberg).
    ``numeric_effect`` / ``categorical_effect``: which effect size decides, with its
    threshold. ``min_rows``: values needed on each side to test a column at all.
    ``workers``: threads for the columns (None: the CPUs this process may use).
    """

    alpha: float = 0.05
    numeric_effect: Literal["wasserstein", "psi"] = "wasserstein"
    wasserstein_threshold: float = 0.1
    categorical_effect: Literal["jensenshannon", "psi"] = "jensenshannon"
    jensenshannon_threshold: float = 0.1
    psi_threshold: float = 0.1
    min_rows: int = 100
    bins: int = 10
    workers: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise UsageError(f"drift: alpha {self.alpha} must be between 0 and 1")
        for name in ("wasserstein_threshold", "jensenshannon_threshold", "psi_threshold"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"drift: {name} must be >= 0")
        if self.min_rows < 2:
            raise UsageError(f"drift: min_rows {self.min_rows} must be at least 2")
        if self.bins < 2:
            raise UsageError(f"drift: bins {self.bins} must be at least 2")


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's comparison.

    ``test`` is ``ks`` or ``chi2`` with its ``statistic`` and ``p_value``; ``q_value`` is
    the Benjamini-Hochberg adjusted p-value across the tested columns; ``effects`` holds
    every effect size computed (``wasserstein_std`` and ``psi``, or ``jensenshannon`` and
    ``psi``), ``effect`` names the one that decides and ``threshold`` its bar.
    ``status``: ``stable``, ``drifted`` or ``insufficient_evidence``.
    """

    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    n_reference: int
    n_current: int
    statistic: float
    p_value: float
    q_value: float
    effect: str
    effect_size: float
    threshold: float
    effects: dict[str, float]
    status: Literal["stable", "drifted", "insufficient_evidence"]

    def to_json(self) -> dict[str, object]:
        return {
            "column": self.column,
            "kind": self.kind,
            "test": self.test,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "effect": self.effect,
            "effect_size": self.effect_size,
            "threshold": self.threshold,
            "effects": dict(self.effects),
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Every tested column (``columns``, in schema order), the columns not tested and
    why (``untested``), and the correction's level (``alpha``)."""

    columns: tuple[ColumnDrift, ...]
    untested: dict[str, str]
    alpha: float

    @property
    def drifted(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.status == "drifted")

    @property
    def insufficient(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.status == "insufficient_evidence")

    @property
    def status(self) -> Status:
        if self.drifted:
            return Status.FAILED
        if self.insufficient:
            return Status.INSUFFICIENT
        return Status.PASSED

    def column(self, name: str) -> ColumnDrift | None:
        return next((c for c in self.columns if c.column == name), None)

    def findings(self, *, label: str | None = None) -> list[Finding]:
        """One finding per drifted column and per column short of evidence; the label
        column's is ``labels.distribution``."""
        out = []
        for c in self.columns:
            check = "labels.distribution" if c.column == label else "drift"
            if c.status == "drifted":
                out.append(
                    Finding(
                        check,
                        f"{c.column}: drifted ({c.test} {c.statistic:.3g}, q = {c.q_value:.2g} "
                        f"<= {self.alpha}; {c.effect} {c.effect_size:.3g} >= {c.threshold})",
                        c.column,
                        data=c.to_json(),
                    )
                )
            elif c.status == "insufficient_evidence":
                out.append(
                    Finding(
                        check,
                        f"{c.column}: {c.n_reference:,} reference and {c.n_current:,} current "
                        "values; too few to test (see min_rows)",
                        c.column,
                        Status.INSUFFICIENT,
                        data=c.to_json(),
                    )
                )
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "columns": [c.to_json() for c in self.columns],
            "untested": dict(self.untested),
        }


# ---------------------------------------------------------------- the reference


class Reference:
    """A reference table prepared for repeated comparisons: each column's sorted finite
    values and category counts are computed once, on first use (thread-safe enough:
    two threads may compute the same column; both get the same value)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._sorted: dict[str, np.ndarray] = {}
        self._counts: dict[str, Counter[object]] = {}

    def sorted_finite(self, name: str) -> np.ndarray:
        found = self._sorted.get(name)
        if found is None:
            found = np.sort(self.table.numbers(name).finite)
            self._sorted[name] = found
        return found

    def counts(self, name: str, rule: ColumnSchema) -> Counter[object]:
        found = self._counts.get(name)
        if found is None:
            found = _category_counts(self.table, name, rule)
            self._counts[name] = found
        return found


def _category_counts(table: Table, name: str, rule: ColumnSchema) -> Counter[object]:
    if rule.numeric:
        finite = table.numbers(name).finite
        if finite.size and finite.min() >= 0 and finite.max() < 1 << 20:
            whole = finite.astype(np.int64)
            if np.array_equal(whole, finite):  # small class numbers: count, don't sort
                counts = np.bincount(whole)
                present = np.flatnonzero(counts)
                return Counter(
                    dict(zip(present.astype(float).tolist(), counts[present].tolist(), strict=True))
                )
        values, counts = np.unique(finite, return_counts=True)
        return Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    return Counter(table.text_counts(name))


# ------------------------------------------------------------------- statistics


def _merge(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """KS statistic and Wasserstein-1 distance of two sorted samples, in one merge.

    A stable argsort of the two concatenated runs is a single merge (timsort finds the
    runs). After each value, ``n*m*(F_a - F_b)`` follows from how many reference values
    came so far; the KS statistic is its largest magnitude at the end of each group of
    equal values, the Wasserstein distance its integral over the gaps between values.
    """
    n, m = a.shape[0], b.shape[0]
    values = np.concatenate([a, b])
    order = np.argsort(values, kind="stable")
    merged = values[order]
    # after k values, c of them from the reference: n*m*(F_a - F_b) = c*m - (k - c)*n =
    # c*(n + m) - k*n, a whole number, so exact in float64 (below 2**53 for any table
    # that fits in memory)
    seen: np.ndarray = np.cumsum(order < n, dtype=np.int32 if n + m < 2**31 else np.int64)
    diff = np.multiply(seen, float(n + m))
    taken = np.arange(1, n + m + 1, dtype=np.float64)
    taken *= n
    diff -= taken
    gaps = np.diff(merged)
    ends = np.empty(n + m, bool)
    np.not_equal(gaps, 0, out=ends[:-1])
    ends[-1] = True
    scale = float(n) * float(m)
    np.abs(diff, out=diff)
    ks = float(np.max(diff, where=ends, initial=0.0)) / scale
    # a plain sum, not a BLAS dot: BLAS threads contend with the column threads
    wasserstein = float(np.sum(diff[:-1] * gaps)) / scale
    return ks, wasserstein


def _ks(a: np.ndarray, b: np.ndarray, merged_ks: float) -> tuple[float, float]:
    from scipy import stats

    n, m = a.shape[0], b.shape[0]
    if max(n, m) <= _EXACT_MAX:
        with warnings.catch_warnings():
            # scipy falls back to its asymptotic p-value when the exact one does not
            # converge, and says so; that fallback is the one used above 10,000 anyway.
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
            result = stats.ks_2samp(a, b)
        return float(result.statistic), float(result.pvalue)
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    p = float(stats.kstwo.sf(merged_ks, np.round(en)))
    return merged_ks, min(max(p, 0.0), 1.0)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    p = np.maximum(expected / max(expected.sum(), 1), _PSI_FLOOR)
    q = np.maximum(actual / max(actual.sum(), 1), _PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_psi(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    # a is sorted: its quantiles (numpy's linear rule) are read off, not searched for
    at = np.linspace(0, 1, bins + 1)[1:-1] * (a.shape[0] - 1)
    low = np.floor(at).astype(np.int64)
    high = np.minimum(low + 1, a.shape[0] - 1)
    edges = np.unique(a[low] + (a[high] - a[low]) * (at - low))
    # counts at or below each edge, read off the sorted samples: no histogram pass
    cum_a = np.concatenate([[0], np.searchsorted(a, edges, side="right"), [a.shape[0]]])
    cum_b = np.concatenate([[0], np.searchsorted(b, edges, side="right"), [b.shape[0]]])
    return _psi(np.diff(cum_a).astype(float), np.diff(cum_b).astype(float))


@dataclass(frozen=True, slots=True)
class _Raw:
    column: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    n_reference: int
    n_current: int
    statistic: float
    p_value: float
    effects: dict[str, float]


def _numeric(name: str, ref: Reference, current: Table, cfg: DriftConfig) -> _Raw:
    a = ref.sorted_finite(name)
    b = np.sort(current.numbers(name).finite)
    n, m = a.shape[0], b.shape[0]
    if n < cfg.min_rows or m < cfg.min_rows:
        return _Raw(name, "numeric", "ks", n, m, math.nan, math.nan, {})
    merged_ks, w = _merge(a, b)
    d, p = _ks(a, b, merged_ks)
    std = float(np.std(a))
    w_std = w / std if std > 0 else (0.0 if w == 0 else math.inf)
    effects = {"wasserstein_std": w_std, "psi": _numeric_psi(a, b, cfg.bins)}
    return _Raw(name, "numeric", "ks", n, m, d, p, effects)


def _pool_rare(table: np.ndarray) -> np.ndarray:
    """Pool the categories whose expected count is below 5 into one, then fold that
    pool into the smallest category while it is still too small."""
    total = table.sum()
    cols = table.sum(axis=0)
    expected_min = cols * table.sum(axis=1).min() / total
    rare = expected_min < _MIN_EXPECTED
    if not rare.any():
        return table
    kept = table[:, ~rare]
    pool = table[:, rare].sum(axis=1, keepdims=True)
    out = np.concatenate([kept, pool], axis=1)
    while out.shape[1] > 1:
        col_totals = out.sum(axis=0)
        if col_totals[-1] * out.sum(axis=1).min() / total >= _MIN_EXPECTED:
            break
        smallest = int(np.argmin(col_totals[:-1])) if out.shape[1] > 1 else 0
        merged = out[:, smallest] + out[:, -1]
        out = np.delete(out, [smallest, out.shape[1] - 1], axis=1)
        out = np.concatenate([out, merged[:, None]], axis=1)
    return out


def _categorical(
    name: str, rule: ColumnSchema, ref: Reference, current: Table, cfg: DriftConfig
) -> _Raw:
    from scipy import stats
    from scipy.spatial import distance

    ref_counts = ref.counts(name, rule)
    cur_counts = _category_counts(current, name, rule)
    n, m = sum(ref_counts.values()), sum(cur_counts.values())
    if n < cfg.min_rows or m < cfg.min_rows:
        return _Raw(name, "categorical", "chi2", n, m, math.nan, math.nan, {})
    keys = sorted(set(ref_counts) | set(cur_counts), key=lambda k: (str(type(k)), k))
    r = np.array([ref_counts.get(k, 0) for k in keys], dtype=float)
    c = np.array([cur_counts.get(k, 0) for k in keys], dtype=float)
    pooled = _pool_rare(np.stack([r, c]))
    if pooled.shape[1] < 2:
        statistic, p = 0.0, 1.0
    else:
        result = stats.chi2_contingency(pooled)
        statistic, p = float(result.statistic), float(result.pvalue)
    js = float(distance.jensenshannon(r / n, c / m, base=2))
    effects = {"jensenshannon": js if math.isfinite(js) else 0.0, "psi": _psi(r, c)}
    return _Raw(name, "categorical", "chi2", n, m, statistic, p, effects)


def _workers(cfg: DriftConfig) -> int:
    if cfg.workers is not None:
        return max(1, cfg.workers)
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int, cells: int) -> list[_R]:
    # Threads pay off only when each column has real work: NumPy's sorts and merges
    # release the GIL, Python's per-cell work does not.
    if workers == 1 or len(items) < 2 or cells < 200_000:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bastion-drift") as pool:
        return list(pool.map(fn, items))


def _bh(p_values: Iterable[float]) -> list[float]:
    from scipy import stats

    ps = list(p_values)
    if not ps:
        return []
    return [float(q) for q in stats.false_discovery_control(np.asarray(ps), method="bh")]


def drift(
    reference: Table | Reference,
    current: Table,
    schema: Schema,
    *,
    config: DriftConfig | None = None,
    skip: Collection[str] = (),
) -> DriftReport:
    """Compare every column of ``schema`` (but ``skip``) between the two tables."""
    cfg = config or DriftConfig()
    ref = reference if isinstance(reference, Reference) else Reference(reference)
    untested: dict[str, str] = {}
    jobs: list[ColumnSchema] = []
    for rule in schema.columns:
        if rule.name in skip:
            untested[rule.name] = "failed the schema check"
        elif rule.name not in ref.table.columns or rule.name not in current.columns:
            untested[rule.name] = "not in both tables"
        elif rule.type == "text" and rule.categories is None:
            untested[rule.name] = "free text: no drift test"
        else:
            jobs.append(rule)

    def one(rule: ColumnSchema) -> _Raw:
        if rule.categorical:
            return _categorical(rule.name, rule, ref, current, cfg)
        return _numeric(rule.name, ref, current, cfg)

    cells = (ref.table.rows + current.rows) * len(jobs)
    raws = _map(one, jobs, _workers(cfg), cells)
    tested = [r for r in raws if r.effects]
    q_of = dict(zip((r.column for r in tested), _bh(r.p_value for r in tested), strict=True))
    columns = []
    for raw in raws:
        if raw.kind == "numeric":
            effect = "wasserstein_std" if cfg.numeric_effect == "wasserstein" else "psi"
            threshold = (
                cfg.wasserstein_threshold
                if cfg.numeric_effect == "wasserstein"
                else cfg.psi_threshold
            )
        else:
            effect = "jensenshannon" if cfg.categorical_effect == "jensenshannon" else "psi"
            threshold = (
                cfg.jensenshannon_threshold
                if cfg.categorical_effect == "jensenshannon"
                else cfg.psi_threshold
            )
        if not raw.effects:
            status: Literal["stable", "drifted", "insufficient_evidence"] = "insufficient_evidence"
            size, q = math.nan, math.nan
        else:
            size, q = raw.effects[effect], q_of[raw.column]
            status = "drifted" if q <= cfg.alpha and size >= threshold else "stable"
        columns.append(
            ColumnDrift(
                column=raw.column,
                kind=raw.kind,
                test=raw.test,
                n_reference=raw.n_reference,
                n_current=raw.n_current,
                statistic=raw.statistic,
                p_value=raw.p_value,
                q_value=q,
                effect=effect,
                effect_size=size,
                threshold=threshold,
                effects=raw.effects,
                status=status,
            )
        )
    return DriftReport(tuple(columns), untested, cfg.alpha)

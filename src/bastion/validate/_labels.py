"""Do the labels still agree with the features? A check that catches flipped labels
whose class counts look unchanged.

Owns: ``label_agreement``. A nearest-centroid classifier is fitted on the reference
(standardised number features, one centroid per class); its agreement with the labels is
measured on the reference by leave-one-out (exact and free: removing row i from its own
class's centroid scales that one distance by (n_c / (n_c - 1))^2) and on the current
table. Flipping labels at random leaves the label distribution as it was, but lowers the
agreement by about the flipped fraction. The drop is tested one-sided (two-proportion z
test) and counts only when significant **and** at least ``max_drop``.

Must never: decide on a table too small to say (``insufficient_evidence``), or use a
row whose features are not all finite (counted instead: the schema check reports them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bastion.validate._schema import Schema
from bastion.validate._table import Table
from bastion.validate._verdict import Finding, Status

__all__ = ["LabelAgreement", "label_agreement"]


@dataclass(frozen=True, slots=True)
class LabelAgreement:
    """How often the reference's nearest class centroid matches the label.

    ``reference`` (leave-one-out) and ``current`` are agreement rates; ``drop`` is
    ``reference - current``; ``p_value`` the one-sided test that the current rate is
    lower; ``rows_*`` the rows used; ``features`` the number columns used.
    """

    reference: float
    current: float
    drop: float
    p_value: float
    rows_reference: int
    rows_current: int
    features: int
    classes: int
    status: Status
    max_drop: float

    def finding(self, label: str) -> Finding | None:
        if self.status is Status.PASSED:
            return None
        if self.status is Status.INSUFFICIENT:
            return Finding(
                "labels.agreement",
                f"{label}: {self.rows_reference:,} reference and {self.rows_current:,} current "
                "rows with finite features; too few to check the labels",
                label,
                Status.INSUFFICIENT,
                data=self.to_json(),
            )
        return Finding(
            "labels.agreement",
            f"{label}: the labels agree with the features less often than in the reference "
            f"({100 * self.current:.1f} % vs {100 * self.reference:.1f} %, p = "
            f"{self.p_value:.2g}): about {100 * self.drop:.1f} % of the labels look wrong "
            "(flipped, or shifted to other rows)",
            label,
            data=self.to_json(),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "current": self.current,
            "drop": self.drop,
            "max_drop": self.max_drop,
            "p_value": self.p_value,
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
            "features": self.features,
            "classes": self.classes,
            "status": str(self.status),
        }


def _matrix(table: Table, features: list[str]) -> np.ndarray:
    return np.column_stack([table.numbers(f).values for f in features])


def _labels(table: Table, label: str, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    """The label of each row as text (``3.0`` for a number label), and which rows have
    one."""
    if numeric:
        values = table.numbers(label).values
        return values.astype(str), np.isfinite(values)
    cells, missing = table.text(label)
    return cells.astype(str), ~missing


def label_agreement(
    reference: Table,
    current: Table,
    schema: Schema,
    *,
    alpha: float = 0.05,
    max_drop: float = 0.02,
    min_rows: int = 100,
    skip: frozenset[str] = frozenset(),
) -> LabelAgreement | None:
    """The check, or None where it does not apply (no categorical label, no number
    feature)."""
    from scipy import stats

    label = schema.label
    if label is None or not schema.column(label).categorical:
        return None
    features = [
        c.name
        for c in schema.columns
        if c.numeric and c.name != label and c.name not in skip and c.name in current.columns
    ]
    if not features or label not in current.columns:
        return None
    numeric_label = schema.column(label).numeric
    x_ref, x_cur = _matrix(reference, features), _matrix(current, features)
    y_ref, has_ref = _labels(reference, label, numeric_label)
    y_cur, has_cur = _labels(current, label, numeric_label)
    ok_ref = np.isfinite(x_ref).all(axis=1) & has_ref
    ok_cur = np.isfinite(x_cur).all(axis=1) & has_cur
    x_ref, y_ref, x_cur, y_cur = x_ref[ok_ref], y_ref[ok_ref], x_cur[ok_cur], y_cur[ok_cur]
    classes, codes, sizes = np.unique(y_ref, return_inverse=True, return_counts=True)
    usable = sizes >= 2
    keep = usable[codes]
    x_ref, codes = x_ref[keep], codes[keep]
    n_ref, n_cur = x_ref.shape[0], x_cur.shape[0]

    def result(ref_rate: float, cur_rate: float, p: float, status: Status) -> LabelAgreement:
        return LabelAgreement(
            ref_rate,
            cur_rate,
            ref_rate - cur_rate,
            p,
            n_ref,
            n_cur,
            len(features),
            int(usable.sum()),
            status,
            max_drop,
        )

    if n_ref < min_rows or n_cur < min_rows or usable.sum() < 2:
        return result(math.nan, math.nan, math.nan, Status.INSUFFICIENT)
    mean, std = x_ref.mean(axis=0), x_ref.std(axis=0)
    varies = std > 0
    z_ref = (x_ref[:, varies] - mean[varies]) / std[varies]
    z_cur = (x_cur[:, varies] - mean[varies]) / std[varies]
    # Centroids of the usable classes, in ``classes`` order (absent classes stay 0 and
    # are never nearest: their distance is set to infinity).
    k = classes.shape[0]
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    sums = np.zeros((k, z_ref.shape[1]))
    np.add.at(sums, codes, z_ref)
    centroids = sums / np.maximum(counts, 1)[:, None]

    def distances(z: np.ndarray) -> np.ndarray:
        d: np.ndarray = (
            (z * z).sum(axis=1)[:, None] - 2 * z @ centroids.T + (centroids**2).sum(axis=1)
        )
        d[:, ~usable] = np.inf
        return d

    d_ref = distances(z_ref)
    rows = np.arange(n_ref)
    own = counts[codes]
    d_ref[rows, codes] *= (own / (own - 1)) ** 2  # leave-one-out: exact for a centroid
    agree_ref = int((d_ref.argmin(axis=1) == codes).sum())
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    cur_codes = np.array([lookup.get(v, -1) for v in y_cur.tolist()], dtype=np.int64)
    agree_cur = int((distances(z_cur).argmin(axis=1) == cur_codes).sum())
    rate_ref, rate_cur = agree_ref / n_ref, agree_cur / n_cur
    pooled = (agree_ref + agree_cur) / (n_ref + n_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    if se == 0:
        p = 1.0 if rate_cur >= rate_ref else 0.0
    else:
        p = float(stats.norm.sf((rate_ref - rate_cur) / se))
    failed = p <= alpha and rate_ref - rate_cur >= max_drop
    return result(rate_ref, rate_cur, p, Status.FAILED if failed else Status.PASSED)

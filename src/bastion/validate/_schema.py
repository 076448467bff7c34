"""A dataset's schema: what a good version of it looks like, inferred from a reference.

Owns: ``Schema`` and ``ColumnSchema`` (column order and types, value ranges, the
fractions of missing, NaN and infinite cells a column may hold, category sets, row-count
bounds, which column is the label), ``infer_schema`` (the schema of a reference table,
with tolerances derived from its size), and the schema's JSON form
(``bastion.schema/1``), which is what the vault stores as ``schema/<name>@N`` and what a
person may edit and put back.

Must never: read files or the vault (it is handed a ``Table`` or a JSON mapping), or
accept a schema document it cannot fully check: a hand-edited schema with a wrong field
is a ``UsageError`` naming the field.

The tolerances, and why (each is a field a person may edit):

- ``max_missing_fraction``, ``max_nan_fraction``, ``max_inf_fraction``: 0 when the
  reference had none (a NaN in a column that never had one is a finding, never dropped
  silently); otherwise the one-sided ``confidence`` Clopper-Pearson upper bound of the
  reference's own rate, so sampling noise alone does not trip it.
- ``min`` / ``max`` and ``max_outside_fraction``: the reference's finite range, and the
  fraction of a new sample allowed outside it. Whatever the distribution, the
  probability mass outside the range of ``n`` exchangeable values follows
  Beta(2, n - 1); the allowance is that distribution's ``confidence`` quantile (about
  9/n at 0.999), so a 100-row reference tolerates about 9 % outside and a 100,000-row
  one about 0.01 %.
- ``categories`` and ``max_unseen_fraction``: the set seen in the reference, and the
  fraction of new values allowed outside it: the Clopper-Pearson bound of the
  Good-Turing estimate of unseen mass (values seen once, over ``n``); 0 for the label,
  since a new class is never noise.
- ``min_rows`` / ``max_rows``: a tenth and ten times the reference's rows. A new version
  an order of magnitude smaller or larger is usually a broken export (a truncated file,
  a join that fanned out), not a real change.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np

from bastion.errors import UsageError
from bastion.validate._table import Table

__all__ = ["FORMAT", "ColumnSchema", "ColumnType", "Schema", "infer_schema"]

FORMAT = "bastion.schema/1"

ColumnType = Literal["integer", "float", "category", "text"]
_TYPES: tuple[str, ...] = ("integer", "float", "category", "text")


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    """What one column may hold. ``categories`` is set for a ``category`` column, and
    for a number column that is the label of a classification (its classes)."""

    name: str
    type: ColumnType
    min: float | None = None
    max: float | None = None
    max_outside_fraction: float = 0.0
    max_missing_fraction: float = 0.0
    max_nan_fraction: float = 0.0
    max_inf_fraction: float = 0.0
    categories: tuple[str | float, ...] | None = None
    max_unseen_fraction: float = 0.0

    @property
    def numeric(self) -> bool:
        return self.type in ("integer", "float")

    @property
    def categorical(self) -> bool:
        """Compared as categories by the drift tests (a category column, or a label)."""
        return self.categories is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.numeric:
            out |= {
                "min": _number(self.min),
                "max": _number(self.max),
                "max_outside_fraction": self.max_outside_fraction,
                "max_nan_fraction": self.max_nan_fraction,
                "max_inf_fraction": self.max_inf_fraction,
            }
        out["max_missing_fraction"] = self.max_missing_fraction
        if self.categories is not None:
            out["categories"] = [_number(c) if isinstance(c, float) else c for c in self.categories]
            out["max_unseen_fraction"] = self.max_unseen_fraction
        return out


def _number(value: float | None) -> float | int | None:
    """Whole numbers as JSON integers, so a schema reads as its data does (0..16)."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else float(value)


@dataclass(frozen=True, slots=True)
class Schema:
    """Column order, each column's rules, row-count bounds, the label, and the reference
    it was inferred from (``source``: ``ref``, ``id``, ``rows``)."""

    columns: tuple[ColumnSchema, ...]
    min_rows: int
    max_rows: int
    label: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def with_source(self, **source: Any) -> Schema:
        return replace(self, source={**self.source, **source})

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": dict(self.source),
            "rows": {"min": self.min_rows, "max": self.max_rows},
            "label": self.label,
            "columns": [c.to_json() for c in self.columns],
        }

    @classmethod
    def from_json(cls, doc: Any, *, where: str = "schema") -> Schema:
        """Check and read a schema document; every problem names its field."""
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: a schema is a JSON object (format {FORMAT})")
        if doc.get("format") != FORMAT:
            raise UsageError(f"{where}: format is {doc.get('format')!r}; expected {FORMAT!r}")
        rows = doc.get("rows")
        if not isinstance(rows, dict):
            raise UsageError(f"{where}: rows must be {{min: N, max: N}}")
        min_rows = _int(rows.get("min"), f"{where}: rows.min")
        max_rows = _int(rows.get("max"), f"{where}: rows.max")
        if min_rows > max_rows:
            raise UsageError(f"{where}: rows.min {min_rows} is above rows.max {max_rows}")
        raw_columns = doc.get("columns")
        if not isinstance(raw_columns, list) or not raw_columns:
            raise UsageError(f"{where}: columns must be a non-empty list")
        columns = tuple(_column(raw, f"{where}: columns[{i}]") for i, raw in enumerate(raw_columns))
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(f"{where}: column(s) {dupes} appear twice")
        label = doc.get("label")
        if label is not None and label not in names:
            raise UsageError(f"{where}: label {label!r} is not one of the columns")
        source = doc.get("source") or {}
        if not isinstance(source, dict):
            raise UsageError(f"{where}: source must be an object")
        return cls(columns, min_rows, max_rows, label, source)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{where}: {value!r} must be a whole number >= 0")
    return value


def _fraction(raw: Mapping[str, Any], key: str, where: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise UsageError(f"{where}.{key}: {value!r} must be a fraction between 0 and 1")
    return float(value)


def _bound(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{where}.{key}: {value!r} must be a finite number or null")
    return float(value)


def _column(raw: Any, where: str) -> ColumnSchema:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: a column is an object with name and type")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}.name: {name!r} must be a non-empty string")
    kind = raw.get("type")
    if kind not in _TYPES:
        raise UsageError(f"{where}.type: {kind!r} is not one of {', '.join(_TYPES)}")
    low, high = _bound(raw, "min", where), _bound(raw, "max", where)
    if low is not None and high is not None and low > high:
        raise UsageError(f"{where}: min {low} is above max {high}")
    categories: tuple[str | float, ...] | None = None
    if raw.get("categories") is not None:
        cats = raw["categories"]
        if not isinstance(cats, list):
            raise UsageError(f"{where}.categories: must be a list")
        if kind in ("integer", "float"):
            if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in cats):
                raise UsageError(f"{where}.categories: a number column's classes are numbers")
            categories = tuple(float(c) for c in cats)
        else:
            if not all(isinstance(c, str) for c in cats):
                raise UsageError(f"{where}.categories: a category column's values are strings")
            categories = tuple(cats)
    return ColumnSchema(
        name=name,
        type=cast("ColumnType", kind),
        min=low,
        max=high,
        max_outside_fraction=_fraction(raw, "max_outside_fraction", where),
        max_missing_fraction=_fraction(raw, "max_missing_fraction", where),
        max_nan_fraction=_fraction(raw, "max_nan_fraction", where),
        max_inf_fraction=_fraction(raw, "max_inf_fraction", where),
        categories=categories,
        max_unseen_fraction=_fraction(raw, "max_unseen_fraction", where),
    )


# --------------------------------------------------------------------- inference


def _upper(count: int, n: int, confidence: float) -> float:
    """0 when nothing was seen; else the one-sided Clopper-Pearson upper bound."""
    if count <= 0 or n <= 0:
        return 0.0
    if count >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, count + 1, n - count))


def _outside_allowance(n: int, confidence: float) -> float:
    """The ``confidence`` quantile of Beta(2, n - 1): mass outside the range of n values."""
    if n < 2:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, 2, n - 1))


def _numeric_column(
    table: Table, name: str, *, is_label: bool, max_categories: int, confidence: float
) -> ColumnSchema:
    nums = table.numbers(name)
    counts = nums.counts
    n = table.rows
    finite = nums.finite
    whole = bool(finite.size) and bool(np.all(np.floor(finite) == finite))
    categories: tuple[str | float, ...] | None = None
    if is_label:
        classes = np.unique(finite)
        if classes.size <= max_categories:
            categories = tuple(float(c) for c in classes)
    return ColumnSchema(
        name=name,
        type="integer" if whole else "float",
        min=float(finite.min()) if finite.size else None,
        max=float(finite.max()) if finite.size else None,
        max_outside_fraction=_outside_allowance(int(finite.size), confidence),
        max_missing_fraction=_upper(counts["missing"], n, confidence),
        max_nan_fraction=_upper(counts["nan"], n, confidence),
        max_inf_fraction=_upper(counts["inf"], n, confidence),
        categories=categories,
        max_unseen_fraction=0.0,
    )


def _text_column(
    table: Table, name: str, *, is_label: bool, max_categories: int, confidence: float
) -> ColumnSchema:
    cells, missing = table.text(name)
    n = table.rows
    seen = Counter(cells[~missing].tolist())
    present = n - int(missing.sum())
    if len(seen) <= max_categories and (is_label or len(seen) <= max(2, present // 2)):
        singletons = sum(1 for c in seen.values() if c == 1)
        return ColumnSchema(
            name=name,
            type="category",
            max_missing_fraction=_upper(int(missing.sum()), n, confidence),
            categories=tuple(sorted(str(c) for c in seen)),
            max_unseen_fraction=0.0 if is_label else _upper(singletons, present, confidence),
        )
    return ColumnSchema(
        name=name, type="text", max_missing_fraction=_upper(int(missing.sum()), n, confidence)
    )


def _all_numbers(table: Table, name: str) -> bool:
    """Every present cell of a text column is a number (and one is present)."""
    cells = table.columns[name]
    first = next((c for c in cells if c is not None and c != ""), None)
    if first is None:
        return False
    try:
        float(first)
    except (TypeError, ValueError):
        return False  # the usual text column: decided without parsing every cell
    counts = table.numbers(name).counts
    return counts["not_numbers"] == 0


def infer_schema(
    table: Table,
    *,
    label: str | None = "label",
    max_categories: int = 50,
    confidence: float = 0.999,
    source: Mapping[str, Any] | None = None,
) -> Schema:
    """The schema of ``table`` (see the module for each tolerance and why).

    A text column whose every cell is a number (or missing) is a number column:
    ``integer`` when every finite value is whole. Other text columns are ``category``
    when they hold at most ``max_categories`` distinct values (and repeat), else
    ``text``. ``label``: the label column's name, used when the table has it; a label
    with at most ``max_categories`` classes is compared as categories.
    """
    if table.rows == 0 or not table.names:
        raise UsageError(
            f"{table.source or 'reference'}: no rows to infer a schema from "
            "(point --against at a snapshot that holds data)"
        )
    if not 0.5 < confidence < 1:
        raise UsageError(f"schema confidence {confidence} must be between 0.5 and 1")
    label_name = label if label in table.names else None
    columns = []
    for name in table.names:
        is_label = name == label_name
        numeric = not table.is_text(name) or _all_numbers(table, name)
        make = _numeric_column if numeric else _text_column
        columns.append(
            make(
                table,
                name,
                is_label=is_label,
                max_categories=max_categories,
                confidence=confidence,
            )
        )
    n = table.rows
    return Schema(
        columns=tuple(columns),
        min_rows=max(1, math.ceil(n / 10)),
        max_rows=n * 10,
        label=label_name,
        source={**dict(source or {}), "rows": n},
    )

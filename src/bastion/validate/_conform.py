"""Does a dataset conform to its schema? Checked before any statistics.

Owns: ``check_schema``, in two stages. Table-level first, file by file: the header
(missing, unexpected or reordered columns: a reader that goes by position would read the
wrong column) and then the row count; the first table-level failure stops the check,
because nothing after it would mean anything. Then column-level, every column: type
(cells that are not numbers, non-whole numbers in an integer column), missing, NaN and
infinite cells, values outside the reference's range, values outside the category set.

Must never: compute drift statistics (``_drift`` does, and only on a table that passed
the table-level stage), drop a NaN or an infinity without counting it, or read files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bastion.validate._schema import ColumnSchema, Schema
from bastion.validate._table import Table
from bastion.validate._verdict import Finding, Status, combine

__all__ = ["SchemaReport", "check_schema"]


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """What the schema check found.

    ``stopped``: a table-level failure ended the check (no column was checked);
    ``table``: every part joined into one table, when the table-level stage passed
    (the statistics run on it); ``failed_columns``: columns with a column-level finding.
    """

    findings: tuple[Finding, ...]
    stopped: bool
    table: Table | None
    failed_columns: frozenset[str] = frozenset()

    @property
    def status(self) -> Status:
        return combine(self.findings)


def _pct(count: int, total: int) -> str:
    return f"{count:,} of {total:,} ({100 * count / max(total, 1):.2g} %)"


def _header(schema: Schema, part: Table) -> Finding | None:
    expected, found = schema.names, part.names
    if expected == found:
        return None
    where = part.source or "table"
    missing = [n for n in expected if n not in found]
    unexpected = [n for n in found if n not in expected]
    if missing or unexpected:
        said = []
        if missing:
            said.append(f"missing column(s) {', '.join(missing[:10])}")
        if unexpected:
            said.append(f"unexpected column(s) {', '.join(unexpected[:10])}")
        hint = (
            f" ({unexpected[0]!r} renamed from {missing[0]!r}?)"
            if len(missing) == len(unexpected) == 1
            else ""
        )
        return Finding(
            "schema.columns",
            f"{where}: {'; '.join(said)}{hint}",
            data={"missing": missing, "unexpected": unexpected},
        )
    at = next(i for i, (a, b) in enumerate(zip(expected, found, strict=True)) if a != b)
    return Finding(
        "schema.columns",
        f"{where}: columns are in another order than the schema's (position {at} holds "
        f"{found[at]!r} where the schema has {expected[at]!r}); a reader that goes by "
        "position would read the wrong column",
        data={"position": at, "found": list(found), "expected": list(expected)},
    )


def _numeric_findings(rule: ColumnSchema, table: Table) -> list[Finding]:
    name, n = rule.name, table.rows
    nums = table.numbers(name)
    counts = nums.counts
    out: list[Finding] = []
    if counts["not_numbers"]:
        e = ", ".join(repr(x) for x in nums.examples)
        out.append(
            Finding(
                "schema.type",
                f"{name}: {_pct(counts['not_numbers'], n)} cells are not numbers (e.g. {e}); "
                f"the schema says {rule.type}",
                name,
                data={"cells": counts["not_numbers"], "examples": list(nums.examples)},
            )
        )
    finite = nums.finite
    if rule.type == "integer" and finite.size:
        fractional = finite[np.floor(finite) != finite]
        if fractional.size:
            out.append(
                Finding(
                    "schema.type",
                    f"{name}: {_pct(int(fractional.size), n)} values are not whole numbers "
                    f"(e.g. {float(fractional[0])!r}); the schema says integer",
                    name,
                    data={"cells": int(fractional.size)},
                )
            )
    for key, limit, what in (
        ("missing", rule.max_missing_fraction, "missing"),
        ("nan", rule.max_nan_fraction, "NaN"),
        ("inf", rule.max_inf_fraction, "infinite"),
    ):
        count = counts[key]
        if count and count / max(n, 1) > limit:
            out.append(
                Finding(
                    f"schema.{key}",
                    f"{name}: {_pct(count, n)} cells are {what}; the schema allows "
                    f"{100 * limit:.2g} %",
                    name,
                    data={"cells": count, "fraction": count / max(n, 1), "allowed": limit},
                )
            )
    # a label's classes say more than its range does: checked below instead
    if finite.size and rule.min is not None and rule.max is not None and rule.categories is None:
        outside = finite[(finite < rule.min) | (finite > rule.max)]
        if outside.size / finite.size > rule.max_outside_fraction:
            out.append(
                Finding(
                    "schema.range",
                    f"{name}: {_pct(int(outside.size), int(finite.size))} values are outside "
                    f"the reference's range [{rule.min:g}, {rule.max:g}] (e.g. "
                    f"{float(outside[0]):g}); the schema allows "
                    f"{100 * rule.max_outside_fraction:.2g} % outside",
                    name,
                    data={
                        "values": int(outside.size),
                        "fraction": outside.size / finite.size,
                        "allowed": rule.max_outside_fraction,
                    },
                )
            )
    if rule.categories is not None and finite.size:
        known = np.asarray(rule.categories, dtype=np.float64)
        unseen = finite[~np.isin(finite, known)]
        if unseen.size and unseen.size / finite.size > rule.max_unseen_fraction:
            out.append(_unseen(rule, int(unseen.size), int(finite.size), f"{unseen[0]:g}"))
    return out


def _unseen(rule: ColumnSchema, count: int, total: int, example: str) -> Finding:
    return Finding(
        "schema.categories",
        f"{rule.name}: {_pct(count, total)} values are not in the reference's set "
        f"(e.g. {example!r}); the schema allows {100 * rule.max_unseen_fraction:.2g} %",
        rule.name,
        data={"values": count, "allowed": rule.max_unseen_fraction},
    )


def _text_findings(rule: ColumnSchema, table: Table) -> list[Finding]:
    name, n = rule.name, table.rows
    if not table.is_text(name):
        return [
            Finding(
                "schema.type",
                f"{name}: holds numbers; the schema says {rule.type} (text)",
                name,
            )
        ]
    _, missing = table.text(name)
    out: list[Finding] = []
    count = int(missing.sum())
    if count and count / max(n, 1) > rule.max_missing_fraction:
        out.append(
            Finding(
                "schema.missing",
                f"{name}: {_pct(count, n)} cells are missing; the schema allows "
                f"{100 * rule.max_missing_fraction:.2g} %",
                name,
                data={"cells": count, "allowed": rule.max_missing_fraction},
            )
        )
    if rule.categories is not None:
        counts = table.text_counts(name)
        known = set(rule.categories)
        new = sorted((v for v in counts if v not in known), key=lambda v: -counts[v])
        unseen = sum(counts[v] for v in new)
        present = sum(counts.values())
        if unseen and unseen / present > rule.max_unseen_fraction:
            out.append(_unseen(rule, unseen, present, str(new[0])[:40]))
    return out


def check_schema(schema: Schema, data: Table | Sequence[Table]) -> SchemaReport:
    """Check ``data`` (one table, or a dataset's files in order) against ``schema``."""
    parts = [data] if isinstance(data, Table) else list(data)
    for part in parts:
        problem = _header(schema, part)
        if problem is not None:
            return SchemaReport((problem,), stopped=True, table=None)
    table = Table.concat(parts) if parts else Table({n: np.empty(0) for n in schema.names})
    if not schema.min_rows <= table.rows <= schema.max_rows:
        return SchemaReport(
            (
                Finding(
                    "schema.rows",
                    f"{table.source or 'table'}: {table.rows:,} rows; the schema expects "
                    f"{schema.min_rows:,} to {schema.max_rows:,} (a truncated export, or a "
                    "join that fanned out?)",
                    data={"rows": table.rows, "min": schema.min_rows, "max": schema.max_rows},
                ),
            ),
            stopped=True,
            table=None,
        )
    findings: list[Finding] = []
    failed: set[str] = set()
    for rule in schema.columns:
        found = _numeric_findings(rule, table) if rule.numeric else _text_findings(rule, table)
        if found:
            failed.add(rule.name)
            findings.extend(found)
    return SchemaReport(
        tuple(findings), stopped=False, table=table, failed_columns=frozenset(failed)
    )

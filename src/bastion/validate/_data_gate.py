"""The data gate: may this dataset go on to training?

Owns: ``check_data``, the order of the checks and the verdict they make together.
First the schema (table-level failures stop everything: no statistic is computed on a
table whose columns are wrong); then drift on every column that has the right type
(Benjamini-Hochberg across them, the label's own distribution included); then whether the
labels still agree with the features; then, given a test set, whether test rows leak from
the training data. ``DataVerdict`` holds every part and its ``status``.

Must never: pass a dataset on missing evidence (any column short of ``min_rows`` makes
the verdict ``insufficient_evidence`` unless something failed), or do I/O: it is handed
tables and a schema; reading them from the vault is ``_snapshots``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.validate._conform import SchemaReport, check_schema
from bastion.validate._drift import DriftConfig, DriftReport, Reference, drift
from bastion.validate._labels import LabelAgreement, label_agreement
from bastion.validate._leakage import Leakage, shared_rows
from bastion.validate._schema import Schema
from bastion.validate._table import Table
from bastion.validate._verdict import Finding, Status, combine

__all__ = ["DataGateConfig", "DataVerdict", "check_data"]


@dataclass(frozen=True, slots=True)
class DataGateConfig:
    """The data gate's knobs beyond drift's: ``label_max_drop`` (the fall in label /
    feature agreement that counts, when significant at ``drift.alpha``) and
    ``max_shared_fraction`` (test rows allowed to appear in the training data)."""

    drift: DriftConfig = field(default_factory=DriftConfig)
    check_labels: bool = True
    label_max_drop: float = 0.02
    max_shared_fraction: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = self.drift
        return {
            "alpha": d.alpha,
            "numeric_effect": d.numeric_effect,
            "wasserstein_threshold": d.wasserstein_threshold,
            "categorical_effect": d.categorical_effect,
            "jensenshannon_threshold": d.jensenshannon_threshold,
            "psi_threshold": d.psi_threshold,
            "min_rows": d.min_rows,
            "bins": d.bins,
            "check_labels": self.check_labels,
            "label_max_drop": self.label_max_drop,
            "max_shared_fraction": self.max_shared_fraction,
        }


@dataclass(frozen=True, slots=True)
class DataVerdict:
    """The gate's outcome and every part of the evidence. ``drift``, ``labels`` and
    ``leakage`` are None when the check did not run (a table-level schema failure, no
    label, no test set)."""

    status: Status
    findings: tuple[Finding, ...]
    schema: SchemaReport
    drift: DriftReport | None = None
    labels: LabelAgreement | None = None
    leakage: Leakage | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "findings": [f.to_json() for f in self.findings],
            "schema_check": {
                "stopped": self.schema.stopped,
                "failed_columns": sorted(self.schema.failed_columns),
                "rows": self.schema.table.rows if self.schema.table is not None else None,
            },
            "drift": self.drift.to_json() if self.drift is not None else None,
            "labels": self.labels.to_json() if self.labels is not None else None,
            "leakage": self.leakage.to_json() if self.leakage is not None else None,
        }


def check_data(
    current: Table | Sequence[Table],
    reference: Table | Reference,
    schema: Schema,
    *,
    test: Table | None = None,
    config: DataGateConfig | None = None,
) -> DataVerdict:
    """Run the data gate on ``current`` (a table, or a dataset's files in order)
    against ``reference`` and its ``schema``; ``test``: a held-out set whose rows must
    not appear in ``current``."""
    cfg = config or DataGateConfig()
    conformance = check_schema(schema, current)
    if conformance.stopped or conformance.table is None:
        return DataVerdict(Status.FAILED, conformance.findings, conformance)
    table = conformance.table
    ref = reference if isinstance(reference, Reference) else Reference(reference)
    # A column whose cells are not of its type cannot be compared; one with values out
    # of range or NaNs still can (on its finite values), and is.
    mistyped = frozenset(f.column for f in conformance.findings if f.check == "schema.type")
    report = drift(ref, table, schema, config=cfg.drift, skip=mistyped)
    findings = [*conformance.findings, *report.findings(label=schema.label)]
    labels = None
    if cfg.check_labels and schema.label is not None and schema.label not in mistyped:
        labels = label_agreement(
            ref.table,
            table,
            schema,
            alpha=cfg.drift.alpha,
            max_drop=cfg.label_max_drop,
            min_rows=cfg.drift.min_rows,
            skip=mistyped,
        )
        found = labels.finding(schema.label) if labels is not None else None
        if found is not None:
            findings.append(found)
    leakage = None
    if test is not None:
        exclude = (schema.label,) if schema.label is not None else ()
        leakage = shared_rows(
            table, test, columns=schema.names, exclude=exclude, max_fraction=cfg.max_shared_fraction
        )
        found = leakage.finding(test.source or "test")
        if found is not None:
            findings.append(found)
    return DataVerdict(combine(findings), tuple(findings), conformance, report, labels, leakage)

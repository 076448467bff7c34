"""Continuous validation: data gates and model gates.

A gate is a pure function from arrays and tables to a typed verdict; reading snapshots
and recording verdicts happen at the edge (``validate_data``, ``validate_model``), so a
pipeline stage, the CLI and a test call the same code.

    data:   Table(s) --check_schema--> SchemaReport   (table-level failures stop here)
                     --drift---------> DriftReport    (KS / chi-squared + effect size, BH)
                     --label_agreement, shared_rows--> labels, leakage
                     = check_data --> DataVerdict
    model:  LoadedModel --evaluate--> Evaluation (per set)
                     --check_model (MetricThreshold, paired bootstrap)--> ModelVerdict
    promote: a passing verdict naming that exact snapshot id --> model/x@prod
             (--force: the admin key; rollback: the promotion history, one step back)

Every verdict's ``status`` is ``passed``, ``failed`` or ``insufficient_evidence``; only
``passed`` lets an artifact through. Defaults and how to tune them: ``docs/validate.md``.
"""

from __future__ import annotations

from bastion.validate._bootstrap import bootstrap_means, interval
from bastion.validate._conform import SchemaReport, check_schema
from bastion.validate._data_gate import DataGateConfig, DataVerdict, check_data
from bastion.validate._drift import ColumnDrift, DriftConfig, DriftReport, Reference, drift
from bastion.validate._labels import LabelAgreement, label_agreement
from bastion.validate._leakage import Leakage, shared_rows
from bastion.validate._metrics import METRICS, Evaluation, Metric
from bastion.validate._model_gate import (
    DEFAULT_THRESHOLDS,
    CriterionResult,
    ModelGateConfig,
    ModelVerdict,
    check_model,
)
from bastion.validate._models import LoadedModel, evaluate, load_model
from bastion.validate._promote import (
    PROD,
    PROMOTION_FORMAT,
    Promotion,
    PromotionRecord,
    PromotionRefused,
    passing_verdict,
    promote,
    promotion_history,
    promotion_name,
    rollback,
)
from bastion.validate._schema import FORMAT, ColumnSchema, ColumnType, Schema, infer_schema
from bastion.validate._snapshots import (
    VERDICT_FORMAT,
    GateRun,
    canonical_json,
    load_dataset,
    schema_for,
    schema_name,
    validate_data,
    validate_model,
    verdict_name,
)
from bastion.validate._table import SUFFIXES, Numbers, Table, TableError, read_table
from bastion.validate._thresholds import CRITERIA, MetricThreshold
from bastion.validate._verdict import Finding, Status, combine

__all__ = [
    "CRITERIA",
    "DEFAULT_THRESHOLDS",
    "FORMAT",
    "METRICS",
    "PROD",
    "PROMOTION_FORMAT",
    "SUFFIXES",
    "VERDICT_FORMAT",
    "ColumnDrift",
    "ColumnSchema",
    "ColumnType",
    "CriterionResult",
    "DataGateConfig",
    "DataVerdict",
    "DriftConfig",
    "DriftReport",
    "Evaluation",
    "Finding",
    "GateRun",
    "LabelAgreement",
    "Leakage",
    "LoadedModel",
    "Metric",
    "MetricThreshold",
    "ModelGateConfig",
    "ModelVerdict",
    "Numbers",
    "Promotion",
    "PromotionRecord",
    "PromotionRefused",
    "Reference",
    "Schema",
    "SchemaReport",
    "Status",
    "Table",
    "TableError",
    "bootstrap_means",
    "canonical_json",
    "check_data",
    "check_model",
    "check_schema",
    "combine",
    "drift",
    "evaluate",
    "infer_schema",
    "interval",
    "label_agreement",
    "load_dataset",
    "load_model",
    "passing_verdict",
    "promote",
    "promotion_history",
    "promotion_name",
    "read_table",
    "rollback",
    "schema_for",
    "schema_name",
    "shared_rows",
    "validate_data",
    "validate_model",
    "verdict_name",
]

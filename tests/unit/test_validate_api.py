"""Pin the validate package's public API, so it never changes by accident."""

from __future__ import annotations

import bastion.validate


def test_validate_exports() -> None:
    assert sorted(bastion.validate.__all__) == sorted(
        [
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
    )
    for name in bastion.validate.__all__:
        assert hasattr(bastion.validate, name), name


def test_exit_codes_of_the_statuses() -> None:
    status = bastion.validate.Status
    assert [s.exit_code for s in status] == [0, 1, 1]
    assert str(status.INSUFFICIENT) == "insufficient_evidence"

"""``bastion validate data | model``: the data and model gates. Parse, call, render.

Exit codes: 0 the gate passed; 1 it failed or lacked evidence (``insufficient_evidence``
is never a pass); 2 bad input (a ref that does not exist, a malformed threshold).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, event_log, load_manifest
from bastion.errors import UsageError

__all__ = ["register"]

app = typer.Typer(help="Gates: may this dataset go on to training, may this model be promoted?")

_SHOWN = 20
_STATUS = {
    "passed": "[green]PASSED[/green]",
    "failed": "[red]FAILED[/red]",
    "insufficient_evidence": "[yellow]INSUFFICIENT EVIDENCE[/yellow] (not a pass)",
}

JsonOption = Annotated[bool, typer.Option("--json", help="Print the verdict document as JSON.")]
RecordOption = Annotated[
    bool,
    typer.Option(
        "--record/--no-record",
        help="Store the verdict as a signed snapshot verdict/<name> (the default).",
    ),
]
LabelOption = Annotated[str, typer.Option(help="The label column.")]


def _open(file: Path) -> tuple[Any, Any]:
    from bastion.vault import Vault

    manifest = load_manifest(file)
    events = event_log(manifest)
    return Vault.from_manifest(manifest, events=events), events


def _findings(document: dict[str, Any]) -> None:
    findings = document["findings"]
    if not findings:
        return
    table = RichTable("check", "column", "finding", show_lines=False)
    for f in findings[:_SHOWN]:
        table.add_row(f["check"], escape(f["column"]), escape(f["message"]))
    console.print(table)
    if len(findings) > _SHOWN:
        console.print(f"... and {len(findings) - _SHOWN} more findings (see --json)")


def _ending(document: dict[str, Any], snapshot: Any) -> None:
    where = f"; verdict {snapshot.ref}" if snapshot is not None else " (not recorded)"
    console.print(f"{_STATUS[document['status']]}{where}")


def _num(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, fmt)


@app.command("data")
def data(
    ref: Annotated[str, typer.Argument(help="The dataset to judge, e.g. dataset/digits@4.")],
    against: Annotated[
        str, typer.Option(help="The reference dataset (its schema is inferred once, stored).")
    ],
    schema: Annotated[
        str | None, typer.Option(help="Use this schema snapshot (schema/NAME@N) instead.")
    ] = None,
    test: Annotated[
        str | None, typer.Option(help="A held-out dataset whose rows must not be in REF.")
    ] = None,
    label: LabelOption = "label",
    alpha: Annotated[float, typer.Option(help="False discovery rate across columns.")] = 0.05,
    min_rows: Annotated[int, typer.Option(help="Values needed per side to test a column.")] = 100,
    record: RecordOption = True,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Judge a dataset against a reference: schema first, then drift, labels, leakage."""
    from bastion.validate import DataGateConfig, DriftConfig, validate_data

    config = DataGateConfig(drift=DriftConfig(alpha=alpha, min_rows=min_rows))
    vault, events = _open(file)
    run = validate_data(
        vault,
        ref,
        against,
        schema=schema,
        test=test,
        label=label,
        config=config,
        record=record,
        events=events,
    )
    document = dict(run.document)
    if as_json:
        from bastion.validate import canonical_json

        console.print_json(canonical_json(document).decode())
    else:
        made = "inferred now" if run.schema_created else "stored"
        schema_ref = run.schema.ref if run.schema is not None else "-"
        console.print(
            f"{document['subject']['ref']} against {document['against']['ref']} "
            f"(schema {schema_ref}, {made})"
        )
        _findings(document)
        if document["drift"] is not None:
            cols = document["drift"]["columns"]
            drifted = sum(c["status"] == "drifted" for c in cols)
            short = sum(c["status"] == "insufficient_evidence" for c in cols)
            console.print(
                f"drift: {len(cols)} columns tested, {drifted} drifted, {short} short of "
                f"evidence (alpha {alpha}, Benjamini-Hochberg)"
            )
        if document["labels"] is not None:
            lab = document["labels"]
            console.print(
                f"labels: agreement with the features {_num(lab['current'], '.3f')} "
                f"(reference {_num(lab['reference'], '.3f')})"
            )
        if document["leakage"] is not None:
            leak = document["leakage"]
            console.print(f"leakage: {leak['shared']:,} of {leak['test_rows']:,} test rows shared")
        _ending(document, run.snapshot)
    raise typer.Exit(run.status.exit_code)


def _pairs(values: list[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        metric, sep, number = item.partition("=")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not sep or not metric or not math.isfinite(value):
            raise UsageError(
                f"{option} {item!r}: expected METRIC=NUMBER, e.g. {option} accuracy=0.9"
            )
        out[metric.strip()] = value
    return out


def _thresholds(
    threshold: list[str], min_absolute_change: list[str], min_relative_change: list[str]
) -> dict[str, Any]:
    from bastion.validate import DEFAULT_THRESHOLDS, METRICS, MetricThreshold

    by = {
        "threshold": _pairs(threshold, "--threshold"),
        "min_absolute_change": _pairs(min_absolute_change, "--min-absolute-change"),
        "min_relative_change": _pairs(min_relative_change, "--min-relative-change"),
    }
    names = sorted({m for values in by.values() for m in values})
    if not names:
        return dict(DEFAULT_THRESHOLDS)
    out = {}
    for name in names:
        metric = METRICS.get(name)
        if metric is None:
            raise UsageError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
        out[name] = MetricThreshold(
            threshold=by["threshold"].get(name),
            min_absolute_change=by["min_absolute_change"].get(name),
            min_relative_change=by["min_relative_change"].get(name),
            greater_is_better=metric.greater_is_better,
        )
    return out


@app.command("model")
def model(
    candidate: Annotated[str, typer.Argument(help="The model to judge, e.g. model/digits@7.")],
    holdout: Annotated[str, typer.Option(help="The held-out dataset (with a label column).")],
    golden: Annotated[str, typer.Option(help="The golden dataset (curated, with labels).")],
    against: Annotated[
        str | None, typer.Option(help="The baseline model, e.g. model/digits@prod.")
    ] = None,
    threshold: Annotated[
        list[str], typer.Option(help="METRIC=VALUE the candidate must reach (repeatable).")
    ] = [],  # noqa: B006
    min_absolute_change: Annotated[
        list[str],
        typer.Option(help="METRIC=CHANGE over the baseline (negative: a margin; repeatable)."),
    ] = [],  # noqa: B006
    min_relative_change: Annotated[
        list[str], typer.Option(help="METRIC=FRACTION over the baseline (repeatable).")
    ] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="The bootstrap's seed.")] = 0,
    replicates: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
    min_examples: Annotated[int, typer.Option(help="Examples a set needs to judge.")] = 20,
    label: LabelOption = "label",
    record: RecordOption = True,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Judge a candidate model on a held-out and a golden set, against a baseline.

    With no threshold given: accuracy no worse than the baseline by more than 0.02, on
    the lower bound of a 95 % paired bootstrap interval (needs --against).
    """
    from bastion.validate import ModelGateConfig, validate_model

    config = ModelGateConfig(
        thresholds=_thresholds(threshold, min_absolute_change, min_relative_change),
        replicates=replicates,
        seed=seed,
        min_examples=min_examples,
    )
    vault, events = _open(file)
    run = validate_model(
        vault,
        candidate,
        against,
        holdout=holdout,
        golden=golden,
        label=label,
        config=config,
        record=record,
        events=events,
    )
    document = dict(run.document)
    if as_json:
        from bastion.validate import canonical_json

        console.print_json(canonical_json(document).decode())
    else:
        base = document["against"]["ref"] if document["against"] else "no baseline"
        console.print(f"{document['subject']['ref']} against {base}")
        table = RichTable(
            "set", "metric", "criterion", "candidate", "baseline", "interval", "needs", "ok"
        )
        for c in document["criteria"]:
            table.add_row(
                c["set"],
                c["metric"],
                c["criterion"],
                _num(c["candidate"]),
                _num(c["baseline"]),
                f"[{_num(c['low'])}, {_num(c['high'])}]",
                _num(c["required"], "+g" if c["criterion"] != "threshold" else "g"),
                "[green]yes[/green]" if c["passed"] else "[red]no[/red]",
            )
        if document["criteria"]:
            console.print(table)
        _findings(document)
        _ending(document, run.snapshot)
    raise typer.Exit(run.status.exit_code)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="validate")

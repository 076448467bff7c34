"""``bastion cost report``: what the gateways spent, by service, backend, key and cause."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, load_manifest

if TYPE_CHECKING:
    from bastion.serve._spend import CostReport

__all__ = ["register"]


class Period(enum.StrEnum):
    day = "day"
    week = "week"
    month = "month"


def report(
    file: ManifestOption = DEFAULT_MANIFEST,
    period: Annotated[
        Period,
        typer.Option(
            "--period", help="The last day, week or month (30 days).", case_sensitive=False
        ),
    ] = Period.day,
    state_dir: Annotated[
        Path | None, typer.Option(help="Read this state directory instead of the manifest's.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document (keys in docs/cli-json.md).")
    ] = False,
) -> None:
    """Show the spend of the last period: totals, by cause (first attempts, retries,
    hedges, fallbacks, shadows, probes), by service and vendor, and each backend's rows.

    Spend that resilience caused (retries, hedges, fallbacks, shadows) is totalled as
    extra; estimated tokens (an answer without usage) are counted and marked."""
    from bastion.serve._spend import cost_report

    directory = state_dir if state_dir is not None else load_manifest(file).state_dir
    found = cost_report(directory, period.value)
    if as_json:
        print(json.dumps(dataclasses.asdict(found), sort_keys=True))
        return
    _show(found)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _show(found: CostReport) -> None:
    console.print(f"spend from {_when(found.since)} to {_when(found.until)} ({found.period})")
    if not found.rows:
        console.print("nothing spent in this period")
        return
    for currency in found.currencies:
        total = found.total[currency]
        extra = found.extra[currency]
        share = extra / total if total else 0.0
        causes = ", ".join(
            f"{cause} {amount:.6g}" for cause, amount in found.by_cause[currency].items() if amount
        )
        vendors = ", ".join(
            f"{name} {amount / total:.0%}" if total else name
            for name, amount in sorted(found.by_vendor[currency].items(), key=lambda kv: -kv[1])
        )
        console.print(
            f"[bold]{total:.6g} {currency}[/bold]; extra from retries, hedges, fallbacks "
            f"and shadows {extra:.6g} ({share:.0%}); by cause: {causes}; by vendor: {vendors}",
            soft_wrap=True,
        )
    table = Table()
    for col in ("service", "backend", "tier", "key", "cause", "attempts", "in", "out", "cost"):
        table.add_column(col)
    for row in found.rows:
        mark = " (est.)" if row.estimated else ""
        table.add_row(
            row.service,
            row.backend,
            str(row.tier),
            row.key or "-",
            row.cause,
            str(row.attempts),
            str(row.input_tokens),
            str(row.output_tokens),
            f"{row.cost:.6g} {row.currency}{mark}",
        )
    console.print(table)
    if found.estimated:
        console.print(
            f"{found.estimated} attempt(s) had no usage in their answer: their tokens are "
            "estimated (about 4 bytes a token)"
        )


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Spend of the gateways: prices, causes, budgets.", no_args_is_help=True)
    sub.command("report")(report)
    app.add_typer(sub, name="cost")

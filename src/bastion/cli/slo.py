"""``bastion slo status | report | outcomes | export | import``: SLOs, budgets, outcomes.

``status`` evaluates every objective of the manifest's ``slos`` now, from the SLI rows in
the state directory, and records any alert that changed (as the gateway's own loop does),
so an SLI whose gateway is down still raises ``slo.nodata``. Exit 0 when nothing pages;
1 when an objective pages or its SLI is quiet; 2 on bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

__all__ = ["register"]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (keys in docs/cli-json.md).")
]


def _when(ts: float | None) -> str | None:
    from datetime import UTC, datetime

    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _status_json(s: Any) -> dict[str, Any]:
    o = s.objective
    return {
        "id": o.id,
        "slo": o.slo,
        "service": o.service,
        "sli_kind": o.sli,
        "target": o.target,
        "threshold_ms": o.threshold_ms,
        "window": o.window.text,
        "budgeting": o.budgeting,
        "at": _when(s.at),
        "window_start": _when(s.start),
        "bad": s.bad,
        "total": s.total,
        "sli": s.sli,
        "budget_spent": s.budget_spent,
        "budget_remaining": s.budget_remaining,
        "coverage": s.coverage,
        "nodata": s.nodata,
        "last_data": _when(s.last_data),
        "burns": [
            {
                "pair": b.pair.name,
                "severity": b.pair.severity,
                "factor": b.pair.factor,
                "long_burn": b.long_burn,
                "short_burn": b.short_burn,
                "long_bad": b.long_bad,
                "long_total": b.long_total,
                "firing": b.firing,
            }
            for b in s.burns
        ],
        "paging": bool(s.firing("page")),
        "ticket": bool(s.firing("ticket")),
    }


def status(as_json: JsonOption = False, file: ManifestOption = DEFAULT_MANIFEST) -> None:
    """Evaluate every SLO now: its SLI, budget left, burn rates, alerts (and record them)."""
    from bastion.cli._common import console, event_log, load_manifest
    from bastion.slo import Evaluator, SqliteSli, objectives

    manifest = load_manifest(Path(file))
    objs = objectives(manifest)
    reader = SqliteSli.in_state_dir(manifest.state_dir)
    log = event_log(manifest)
    try:
        # watching_since 0: from the command line, an SLI that never had data is quiet
        statuses = Evaluator(objs, reader, log, watching_since=0.0).step()
    finally:
        reader.close()
        log.close()
    alarm = any(s.firing("page") or s.nodata for s in statuses)
    if as_json:
        print(json.dumps({"slos": [_status_json(s) for s in statuses]}, sort_keys=True))
    else:
        if not statuses:
            console.print(f"no slos in {file}")
        for s in statuses:
            o = s.objective
            sli = "no data" if s.sli is None else f"{100 * s.sli:.4f}%"
            state = (
                "[red]PAGE[/red]"
                if s.firing("page")
                else "[yellow]ticket[/yellow]"
                if s.firing("ticket")
                else "[yellow]no data[/yellow]"
                if s.nodata
                else "[green]ok[/green]"
            )
            unit = "slices" if o.budgeting == "timeslices" else "requests"
            console.print(
                f"{o.id} ({o.service}, {o.sli}, target {100 * o.target:g}% over "
                f"{o.window.text}): {state}  SLI {sli} of {s.total} {unit}, budget left "
                f"{100 * s.budget_remaining:.1f}% (window {100 * s.coverage:.0f}% covered)"
            )
            for b in s.burns:
                mark = " [red]firing[/red]" if b.firing else ""
                console.print(
                    f"  {b.pair.severity:6} {b.pair.name:7} burn {b.long_burn:8.2f} / "
                    f"{b.short_burn:8.2f} (needs {b.pair.factor:g}){mark}"
                )
    if alarm:
        raise typer.Exit(1)


def report(
    period: Annotated[str, typer.Option(help="The report's period: month.")] = "month",
    month: Annotated[
        str | None, typer.Option(help="The calendar month, as 2026-11 (default: this one).")
    ] = None,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """The calendar SLA report: each SLO's month, met or not, and each incident's share of
    its error budget."""
    import time
    from datetime import UTC, datetime

    from bastion.cli._common import console, event_log, load_manifest
    from bastion.errors import UsageError
    from bastion.slo import SqliteSli, month_report, objectives

    if period != "month":
        raise UsageError(f"--period {period!r}: the one period is month")
    now = time.time()
    at = now
    if month is not None:
        try:
            at = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise UsageError(f"--month {month!r} is not a month such as 2026-11") from None
    manifest = load_manifest(Path(file))
    reader = SqliteSli.in_state_dir(manifest.state_dir)
    log = event_log(manifest)
    try:
        rows = month_report(objectives(manifest), reader, log, at=at, now=now)
    finally:
        reader.close()
        log.close()
    if as_json:
        out = [
            {
                "id": r.objective,
                "service": r.service,
                "sli_kind": r.sli_kind,
                "month": r.month,
                "start": _when(r.start),
                "end": _when(r.end),
                "target": r.target,
                "bad": r.bad,
                "total": r.total,
                "sli": r.sli,
                "met": r.met,
                "budget_spent": r.budget_spent,
                "incidents": [
                    {
                        "severity": i.severity,
                        "start": _when(i.start),
                        "end": _when(i.end),
                        "open": i.open,
                        "event_id": i.event_id,
                        "bad": i.bad,
                        "budget_share": i.budget_share,
                    }
                    for i in r.incidents
                ],
            }
            for r in rows
        ]
        print(json.dumps({"period": "month", "slos": out}, sort_keys=True))
        return
    for r in rows:
        sli = "no data" if r.sli is None else f"{100 * r.sli:.4f}%"
        met = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "-"}[r.met]
        spent = "-" if r.budget_spent is None else f"{100 * r.budget_spent:.1f}%"
        console.print(
            f"{r.month} {r.objective} ({r.service}): {sli} of {r.total}, target "
            f"{100 * r.target:g}%: {met}; budget spent {spent}, {len(r.incidents)} incidents"
        )
        for i in r.incidents:
            share = "-" if i.budget_share is None else f"{100 * i.budget_share:.1f}%"
            console.print(
                f"  {i.severity:6} {_when(i.start)} .. {_when(i.end)}"
                f"{' (open)' if i.open else ''}: {i.bad} bad, {share} of the budget"
            )


def outcomes(
    days: Annotated[int, typer.Option(help="The period: the last this many days.")] = 30,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """The outcome metrics: DORA's four keys for models, customer-trust shares per
    service, model freshness, data RPO and training goodput, from the event log and the
    SLI rows."""
    import time
    from dataclasses import asdict

    from bastion.cli._common import console, event_log, load_manifest
    from bastion.errors import UsageError
    from bastion.slo import SqliteSli, ages, dora, jobs_goodput, services_trust

    if days < 1:
        raise UsageError(f"--days {days}: give at least 1")
    manifest = load_manifest(Path(file))
    now = time.time()
    start = now - days * 86400
    reader = SqliteSli.in_state_dir(manifest.state_dir)
    log = event_log(manifest)
    try:
        events = log.query()
        keys = dora(events, start=start, end=now)
        shares = services_trust(reader, events, manifest.services, start=start, end=now)
        found = ages(events, now=now)
        runs = jobs_goodput(events, manifest.jobs)
    finally:
        reader.close()
        log.close()
    if as_json:
        print(
            json.dumps(
                {
                    "days": days,
                    "dora": asdict(keys),
                    "trust": [asdict(t) for t in shares],
                    "ages": [asdict(a) for a in found],
                    "goodput": [asdict(g) for g in runs],
                },
                sort_keys=True,
            )
        )
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    def dur(x: float | None) -> str:
        return "-" if x is None else f"{x / 3600:.1f} h"

    console.print(
        f"last {days} days: {keys.promotions} promotions ({keys.promotions_per_week:.2f} a "
        f"week), lead time {dur(keys.lead_time_s)}, change failure rate "
        f"{pct(keys.change_failure_rate)} ({keys.rollbacks} rollbacks), time to restore "
        f"{dur(keys.time_to_restore_s)}"
    )
    for t in shares:
        console.print(
            f"  {t.service}: {t.requests} requests; failed {pct(t.failed)}, unanswered "
            f"{pct(t.unanswered)}, fallback tier {pct(t.fallback)}, wrong answers {pct(t.wrong)}"
        )
    for a in found:
        console.print(f"  {a.kind:9} {a.name}: {dur(a.age_s)} old")
    for g in runs:
        console.print(
            f"  goodput   {g.job} (run {g.run_id}): {pct(g.goodput)} of {g.wall_s:.0f} s, "
            f"{g.down_s:.1f} s down, {g.steps_redone} of {g.steps} steps redone"
        )


def export(file: ManifestOption = DEFAULT_MANIFEST) -> None:
    """Print the manifest's slos as OpenSLO v1 YAML (one SLO document each)."""
    from bastion.cli._common import load_manifest
    from bastion.slo import to_openslo

    print(to_openslo(load_manifest(Path(file)).slos), end="")


def import_(
    source: Annotated[Path, typer.Argument(help="An OpenSLO v1 YAML file.")],
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Read OpenSLO SLO documents and print them as a slos block for the manifest."""
    import io

    from ruamel.yaml import YAML

    from bastion.cli._common import load_manifest
    from bastion.errors import UsageError
    from bastion.slo import from_openslo

    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    services = list(load_manifest(Path(file)).services) if Path(file).exists() else None
    entries = from_openslo(text, str(source), services=services)
    yaml = YAML()
    yaml.default_flow_style = None
    yaml.width = 4096  # one entry a line, to paste
    out = io.StringIO()
    yaml.dump({"slos": entries}, out)
    print(out.getvalue(), end="")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="SLOs and error budgets: status, the monthly report, OpenSLO.")
    sub.command("status")(status)
    sub.command("report")(report)
    sub.command("outcomes")(outcomes)
    sub.command("export")(export)
    sub.command("import")(import_)
    app.add_typer(sub, name="slo")

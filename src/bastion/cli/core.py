"""``bastion check | init | schema | events``: the foundation's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion import starter
from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console
from bastion.events import EventLog, parse_since
from bastion.manifest import load, schema

__all__ = ["register"]


def check(file: ManifestOption = DEFAULT_MANIFEST) -> None:
    """Check a manifest; print every problem with file:line:column, exit 2 if any."""
    manifest = load(file)
    console.print(
        f"{file}: ok: system {manifest.system!r}, {len(manifest.components)} components, "
        f"{len(manifest.jobs)} jobs, {len(manifest.services)} services, "
        f"{len(manifest.slos)} SLOs, state in {manifest.state_dir}"
    )


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create bastion.yaml.")] = Path(),
    system: Annotated[str, typer.Option(help="The system's name.")] = "my-system",
    force: Annotated[bool, typer.Option(help="Overwrite an existing bastion.yaml.")] = False,
) -> None:
    """Create a commented starter manifest with a vault of two local replicas."""
    made = starter.init(directory, system=system, force=force)
    for path in made:
        console.print(f"created {path}")
    console.print(f"next: edit {directory / 'bastion.yaml'} and run `bastion check -f ...`")


def schema_cmd() -> None:
    """Print the manifest's JSON Schema (point your editor's YAML plugin at it)."""
    console.print_json(json.dumps(schema()))


def events(
    file: ManifestOption = DEFAULT_MANIFEST,
    state_dir: Annotated[
        Path | None, typer.Option(help="Read this state directory instead of the manifest's.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Exact kind, or a glob such as 'vault.*'.")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Only this component.")] = None,
    since: Annotated[str | None, typer.Option(help="An age (10m, 2h, 1d) or an ISO time.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Show the event log."""
    directory = state_dir if state_dir is not None else load(file).state_dir
    since_ts = parse_since(since) if since else None
    with EventLog.in_state_dir(directory) as log:
        if follow:
            for event in log.follow(kind=kind, subject=subject, since=since_ts):
                _print_event(event.to_json(), as_json)
            return
        found = log.query(kind=kind, subject=subject, since=since_ts)
    if as_json:
        for event in found:
            _print_event(event.to_json(), True)
        return
    table = Table("time (UTC)", "kind", "subject", "segment", "data", box=None)
    for event in found:
        row = event.to_json()
        table.add_row(
            row["ts"][:23],
            row["kind"],
            row["subject"],
            row["segment"],
            json.dumps(row["data"], sort_keys=True),
        )
    console.print(table)
    console.print(f"{len(found)} event(s)")


def _print_event(row: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, sort_keys=True), flush=True)
    else:
        print(f"{row['ts']} {row['kind']} {row['subject']} {json.dumps(row['data'])}", flush=True)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(init)
    app.command("schema")(schema_cmd)
    app.command()(events)

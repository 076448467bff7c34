"""``bastion check | init | schema | events``: the foundation's commands."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, err_console
from bastion.errors import ManifestError
from bastion.events import EventLog, parse_since
from bastion.manifest import load, schema

__all__ = ["register"]


def check(
    file: ManifestOption = DEFAULT_MANIFEST,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON document: ok, counts, problems, warnings."),
    ] = False,
) -> None:
    """Check a manifest; print every problem with file:line:column, exit 2 if any.

    Warnings (an api_key_env that is not set here) are printed but do not fail the check.
    """
    from bastion.serve.runner import unset_api_keys

    try:
        manifest = load(file)
    except ManifestError as exc:
        if as_json:
            print(
                json.dumps(
                    {
                        "file": str(file),
                        "ok": False,
                        "problems": [dataclasses.asdict(p) for p in exc.problems],
                        "warnings": [],
                    },
                    sort_keys=True,
                )
            )
        raise
    warnings = unset_api_keys(manifest)
    if as_json:
        doc = {
            "file": str(file),
            "ok": True,
            "system": manifest.system,
            "components": len(manifest.components),
            "jobs": len(manifest.jobs),
            "services": len(manifest.services),
            "slos": len(manifest.slos),
            "state_dir": str(manifest.state_dir),
            "problems": [],
            "warnings": warnings,
        }
        print(json.dumps(doc, sort_keys=True))
        return
    for line in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    console.print(
        f"{file}: ok: system {manifest.system!r}, {len(manifest.components)} components, "
        f"{len(manifest.jobs)} jobs, {len(manifest.services)} services, "
        f"{len(manifest.slos)} SLOs, state in {manifest.state_dir}",
        soft_wrap=True,
        markup=False,
    )


def init(
    directory: Annotated[
        Path, typer.Argument(help="Where bastion.yaml is, or is to be created.")
    ] = Path(),
    system: Annotated[str, typer.Option(help="The system's name (a new manifest).")] = "my-system",
    force: Annotated[
        bool, typer.Option(help="Write a fresh starter over an existing bastion.yaml.")
    ] = False,
    admin_key_out: Annotated[
        Path | None,
        typer.Option(
            "--admin-key-out",
            help="Make the admin key (it deletes from the vault) at this path, off the "
            "vault's key directory; this host keeps only its public half.",
        ),
    ] = None,
    token: Annotated[
        bool,
        typer.Option(
            "--token",
            help="Also make a control API token (for `bastion up`'s state-changing calls); "
            "it is printed once and kept only as a hash (as `bastion token` does).",
        ),
    ] = False,
) -> None:
    """Create a commented starter manifest with a vault of two local replicas; beside an
    existing manifest, make only the keys and replica directories its vault lacks."""
    from bastion import starter

    setup = starter.init(directory, system=system, force=force, admin_key_out=admin_key_out)
    if token:
        from bastion.control import UpFiles, make_token
        from bastion.manifest import load

        files = UpFiles(load(setup.manifest).state_dir)
        files.make()
        _say(f"control API token (shown once): {make_token(files.tokens, 'init')}")
    if setup.wrote_manifest:
        _say(f"created {_shown(setup.manifest)}")
    for path in setup.made:
        _say(f"created {_shown(path)}")
    for note in setup.notes:
        _say(f"note: {note}")
    if setup.wrote_manifest:
        _say(f"next: edit {_shown(setup.manifest)} and run `bastion check -f ...`")
        return
    if not setup.made:
        _say(f"{_shown(setup.manifest)}: its vault's keys and replicas are all there")
    _say(f"left {_shown(setup.manifest)} as it was (--force writes a fresh starter over it)")


def _say(line: str) -> None:
    # one line per path, never wrapped or read as markup: people copy these, scripts read them
    console.print(line, soft_wrap=True, markup=False)


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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

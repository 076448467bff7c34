"""``bastion playbook run | test | approve | deny | status``: response playbooks.

``test EVENT.json`` prints the plan ``run`` would execute for that event (the same
``bastion.playbooks.plan``); exit 2 for a bad event file or manifest.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

__all__ = ["register"]


def run(
    file: ManifestOption = DEFAULT_MANIFEST,
    name: Annotated[
        str, typer.Option(help="This runner's name (its place in the log).")
    ] = "default",
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Read the log from its first event.")
    ] = False,
    poll_ms: Annotated[float, typer.Option(help="Milliseconds between polls when idle.")] = 10.0,
) -> None:
    """Follow the event log and carry out the playbooks it triggers, until SIGTERM or ^C."""
    from bastion.cli._common import load_manifest
    from bastion.playbooks import Runner

    manifest = load_manifest(Path(file))
    runner = Runner(manifest, name=name, poll_s=poll_ms / 1000)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop.set())
    try:
        runner.run(from_start=from_start)
    finally:
        runner.close()


def dry_run(
    event: Annotated[
        Path, typer.Argument(help="One event as JSON (a line of bastion events --json).")
    ],
    file: ManifestOption = DEFAULT_MANIFEST,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Dry run: print the plan the playbooks would execute for EVENT, and do nothing."""
    from bastion.cli._common import console, load_manifest
    from bastion.playbooks import plan, read_event

    manifest = load_manifest(Path(file))
    found = plan(manifest.playbooks, read_event(event))
    if as_json:
        print(json.dumps(found.to_json(), sort_keys=True))
        return
    if not found.rules:
        console.print(f"no playbook is triggered by {found.event['kind']}")
        return
    for rule in found.rules:
        if rule.error:
            console.print(f"[red]{rule.rule}[/red]: cannot plan: {rule.error}")
            continue
        console.print(
            f"[bold]{rule.rule}[/bold] incident {rule.incident!r} ({rule.strategy}, "
            f"escalate after {rule.max_failures} failure(s))"
        )
        for step in rule.actions:
            gate = f" [yellow]approve {step.approval_id}[/yellow]" if step.approve else ""
            check = f" check {json.dumps(step.check)}" if step.check else ""
            console.print(
                f"  {step.index + 1}. {step.do} {step.target} {json.dumps(dict(step.params))}"
                f"{gate}{check}  key {step.key}",
                markup=True,
                soft_wrap=True,
            )


def _state_dir(file: Path) -> Path:
    from bastion.cli._common import load_manifest

    return load_manifest(file).state_dir


def approve(
    id: Annotated[str, typer.Argument(help="The approval id (bastion playbook status).")],
    file: ManifestOption = DEFAULT_MANIFEST,
    by: Annotated[str, typer.Option(help="Who approves, for the record.")] = "",
) -> None:
    """Approve an action that waits for a person (approve: true)."""
    from bastion.cli._common import console
    from bastion.playbooks import approve as run_approve

    found = run_approve(_state_dir(Path(file)), id, by=by)
    console.print(f"[green]approved[/green] {found.id}: {found.action} {found.target}")


def deny(
    id: Annotated[str, typer.Argument(help="The approval id (bastion playbook status).")],
    file: ManifestOption = DEFAULT_MANIFEST,
    by: Annotated[str, typer.Option(help="Who denies, for the record.")] = "",
) -> None:
    """Deny an action that waits for a person; its playbook escalates and stops."""
    from bastion.cli._common import console
    from bastion.playbooks import deny as run_deny

    found = run_deny(_state_dir(Path(file)), id, by=by)
    console.print(f"[yellow]denied[/yellow] {found.id}: {found.action} {found.target}")


def status(
    file: ManifestOption = DEFAULT_MANIFEST,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Approvals waiting, and the actions taken."""
    from rich.table import Table

    from bastion.cli._common import console
    from bastion.playbooks import Ledger

    with Ledger.in_state_dir(_state_dir(Path(file))) as ledger:
        approvals = ledger.approvals()
        actions = ledger.actions()
    if as_json:
        print(
            json.dumps(
                {"approvals": [a.to_json() for a in approvals], "actions": actions}, sort_keys=True
            )
        )
        return
    table = Table("approval", "state", "rule", "action", "target", box=None)
    for a in approvals:
        table.add_row(a.id, a.state, a.rule, a.action, a.target)
    console.print(table)
    done = Table("rule", "incident", "action", "target", "state", box=None)
    for row in actions:
        done.add_row(row["rule"], row["incident"], row["action"], row["target"], row["state"])
    console.print(done)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Response playbooks: event -> condition -> actions, exactly once.")
    sub.command("run")(run)
    sub.command("test")(dry_run)
    sub.command("approve")(approve)
    sub.command("deny")(deny)
    sub.command("status")(status)
    app.add_typer(sub, name="playbook")

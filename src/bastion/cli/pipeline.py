"""``bastion pipeline run | status``: run a manifest pipeline; show its latest run.

Exit codes: 0 every stage succeeded (ran, cached or resumed); 1 a stage failed (its
dependants were blocked, the rest ran); 2 a bad definition or an unknown pipeline.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, event_log, load_manifest

if TYPE_CHECKING:
    from rich.live import Live

__all__ = ["register"]

app = typer.Typer(help="Pipelines: stages that exchange only verified vault snapshots.")

_STYLE = {
    "pending": "[dim]pending[/dim]",
    "running": "[cyan]running[/cyan]",
    "succeeded": "[green]succeeded[/green]",
    "cached": "[green]cached[/green]",
    "resumed": "[green]resumed[/green]",
    "failed": "[red]failed[/red]",
    "blocked": "[yellow]blocked[/yellow]",
}


def _table(record: Any) -> Table:
    table = Table("stage", "state", "output", "tries", "seconds", "note", title=record.pipeline)
    for name, rec in record.stages.items():
        note = rec.reason or (f"uncached: {rec.uncached}" if rec.uncached else "")
        table.add_row(
            name,
            _STYLE.get(rec.state, rec.state),
            escape(rec.output["ref"]) if rec.output else "-",
            str(rec.attempts) if rec.attempts else "-",
            f"{rec.seconds:.2f}" if rec.seconds is not None else "-",
            escape(note[:120]),
        )
    return table


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="The pipeline, as named under pipelines:.")],
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Run a pipeline: skip stages whose outputs are cached or finished, run the rest."""
    from bastion.pipeline import PipelineRunner
    from bastion.vault import Vault

    manifest = load_manifest(file)
    events = event_log(manifest)
    vault = Vault.from_manifest(manifest, events=events)
    live: Live | None = None
    if sys.stdout.isatty():
        from rich.live import Live  # only for a terminal: a cached re-run is start-up

        live = Live(console=console, refresh_per_second=8, transient=False)
        live.start()

    def show(record: Any) -> None:
        if live is not None:
            live.update(_table(record))

    try:
        record = PipelineRunner(manifest, name, vault=vault, events=events, on_change=show).run()
    finally:
        if live is not None:
            live.stop()
    if live is None:
        console.print(_table(record))
    console.print(
        f"pipeline {name}: {_STYLE.get(record.state, record.state)} (run {record.run_id}"
        + (f", resumed {record.resumed_from}" if record.resumed_from else "")
        + ")"
    )
    raise typer.Exit(0 if record.state == "succeeded" else 1)


@app.command("status")
def status(
    name: Annotated[str | None, typer.Argument(help="One pipeline (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run records as JSON.")] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """The latest run of each pipeline: every stage's state, output and cache key."""
    from bastion.pipeline import build, read_run

    manifest = load_manifest(file)
    names = [name] if name is not None else sorted(manifest.pipelines)
    out: dict[str, Any] = {}
    for pipeline in names:
        dag = build(manifest.pipelines, pipeline)  # an unknown name is exit 2
        record = read_run(manifest.state_dir, pipeline)
        out[pipeline] = record.to_json() if record is not None else None
        if not as_json:
            if record is None:
                console.print(f"pipeline {pipeline}: never run ({', '.join(dag.order)})")
            else:
                console.print(_table(record))
                console.print(f"pipeline {pipeline}: {_STYLE.get(record.state, record.state)}")
    if as_json:
        console.print_json(json.dumps(out))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="pipeline")

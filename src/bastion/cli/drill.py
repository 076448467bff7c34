"""``bastion drill run EXPERIMENT | faults | suite``: run a drill with a live view; list the
faults; run the reference suite against a sandbox twin."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bastion import event_kinds as ek
from bastion.cli._common import DEFAULT_MANIFEST, console

__all__ = ["register"]


class _LiveState:
    """What the live view shows; updated by the runner's callback, drawn by rich."""

    def __init__(self, title: str, hidden: set[str]) -> None:
        self.title = title
        self.hidden = hidden  # the steady-state probes: shown as the sample line instead
        self.phase = "starting"
        self.started = time.monotonic()
        self.samples: deque[bool] = deque(maxlen=80)
        self.activities: deque[tuple[str, str, str]] = deque(maxlen=8)
        self.lock = threading.Lock()

    def update(self, what: str, data: dict[str, Any]) -> None:
        with self.lock:
            if what == "phase":
                self.phase = str(data["phase"])
            elif what == "sample":
                self.samples.append(bool(data["met"]))
            elif data.get("name") in self.hidden:
                return
            elif what == "activity.start":
                self.activities.append((str(data["type"]), str(data["name"]), "running"))
            elif what == "activity.done":
                for i, (kind, name, status) in enumerate(self.activities):
                    if name == data["name"] and status == "running":
                        self.activities[i] = (kind, name, str(data["status"]))
                        break

    def __rich__(self) -> RenderableType:
        with self.lock:
            header = Text.assemble(
                ("drill ", "bold"),
                (self.title, "bold cyan"),
                f"  phase: {self.phase}  {time.monotonic() - self.started:5.1f} s",
            )
            line = Text("steady state ")
            for met in self.samples:
                line.append("▇" if met else "▁", style="green" if met else "red")
            table = Table(show_header=True, header_style="bold", expand=False, box=None)
            table.add_column("activity")
            table.add_column("type")
            table.add_column("status")
            colours = {"succeeded": "green", "failed": "red", "running": "yellow"}
            for kind, name, status in self.activities:
                table.add_row(escape(name), kind, Text(status, style=colours.get(status, "")))
            return Group(header, line, table)


def _state_dir(loaded: dict[str, Any], file: Path, state_dir: Path | None) -> Path | None:
    """Where the drill's events go: ``--state-dir``; else the manifest given with ``-f``;
    else the experiment's own ``manifest:`` (the runner resolves it next to the
    experiment, wherever the drill is run from); else ./bastion.yaml if there is one;
    else None (the runner's default, ``.bastion`` next to the experiment)."""
    from bastion.drill.runner import bastion_settings
    from bastion.manifest import load

    if state_dir is not None:
        return state_dir
    if file != DEFAULT_MANIFEST:
        return load(file).state_dir
    if bastion_settings(loaded).get("manifest"):
        return None
    if file.is_file():
        return load(file).state_dir
    return None


def _timeline(bastion: dict[str, Any], width: int = 60) -> list[Text]:
    """The recovery as a picture: steady-state samples on a time axis, with the fault's
    injection (I), its detection (D), its revert (v) and the restoration (R) marked."""
    samples = bastion.get("samples") or []
    events = bastion.get("events") or []
    if not samples:
        return []
    t0 = min([s["mono_ns"] for s in samples] + [e["mono_ns"] for e in events])
    t1 = max([s["mono_ns"] for s in samples] + [e["mono_ns"] for e in events])
    span = max(1, t1 - t0)

    def col(ns: int) -> int:
        return int(min(width - 1, (ns - t0) * (width - 1) // span))

    cells: list[bool | None] = [None] * width
    for sample in samples:
        cells[col(sample["mono_ns"])] = bool(sample["met"])
    last: bool | None = None
    line = Text("steady state ")
    for cell in cells:
        last = cell if cell is not None else last
        if last is None:
            line.append(" ")
        else:
            line.append("▇" if last else "▁", style="green" if last else "red")
    marks = [" "] * width
    m = bastion.get("measurements") or {}
    detected = m.get("detected_by")
    firsts: dict[str, int] = {}
    for e in events:
        firsts.setdefault(e["kind"], e["mono_ns"])
    for kind, mark in (
        ("drill.fault.injected", "I"),
        (ek.DRILL_FAULT_REVERTED, "v"),
        (ek.DRILL_STEADY_STATE_RESTORED, "R"),
        (detected or "", "D"),
    ):
        if kind in firsts:
            marks[col(firsts[kind])] = mark
    axis = Text(f"             {''.join(marks)}")
    scale = Text(f"             0 s{' ' * (width - 8)}{span / 1e9:.1f} s", style="dim")
    legend = Text(
        "             I injected  D detected  v reverted  R steady state restored", style="dim"
    )
    return [line, axis, scale, legend]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def run(
    experiment: Annotated[Path, typer.Argument(help="The experiment (Chaos Toolkit format).")],
    file: Annotated[
        Path,
        typer.Option(
            "-f",
            "--file",
            help="The system's manifest, for its event log (default: the experiment's "
            "manifest: key, else ./bastion.yaml).",
        ),
    ] = DEFAULT_MANIFEST,
    journal: Annotated[Path, typer.Option(help="Where to write the JSON journal.")] = Path(
        "journal.json"
    ),
    state_dir: Annotated[
        Path | None, typer.Option(help="Event log directory (default: the manifest's).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the faults' randomness.")] = None,
    live: Annotated[bool, typer.Option(help="Show the live view.")] = True,
    twin: Annotated[
        str | None,
        typer.Option(
            "--twin",
            help="Run against this sandbox twin of the -f manifest (see bastion twin up): "
            "its paths, ports and processes are the whole scope, its log gets the events.",
        ),
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(
            "--control",
            help="With --twin: a control twin (another twin of the -f manifest) given the "
            "same load; the drill is aborted when the KPIs diverge (ChAP).",
        ),
    ] = None,
    control_rate: Annotated[
        float, typer.Option(help="With --control: requests a second sent to each twin.")
    ] = 20.0,
    control_path: Annotated[
        str, typer.Option(help="With --control: the route the load is sent to.")
    ] = "/v1/predict",
) -> None:
    """Run an experiment: steady state before, during and after; faults; rollbacks;
    measured time to detect, RTO and RPO. Exit 1 if it broke and never recovered."""
    from bastion.drill.runner import load_experiment, raise_for_refusals, run_experiment

    loaded = load_experiment(experiment)
    hypothesis = loaded.get("steady-state-hypothesis") or {}
    hidden = {str(p.get("name")) for p in hypothesis.get("probes", [])}
    state = _LiveState(str(loaded.get("title", experiment.name)), hidden)
    scope = None
    if twin is not None:
        from bastion.twin import Twin

        sandbox = Twin(file, twin)
        scope = sandbox.scope()
        where: Path | None = state_dir or sandbox.state_dir
    elif control is not None:
        from bastion.errors import UsageError

        raise UsageError("drill run: --control needs --twin (the experiment's twin)")
    else:
        where = _state_dir(loaded, file, state_dir)
    comparison = None
    if twin is not None and control is not None:
        from bastion.drill.kpi import KpiComparison
        from bastion.twin import Twin

        comparison = KpiComparison(
            _gateway_of(Twin(file, twin)),
            _gateway_of(Twin(file, control)),
            rate=control_rate,
            path=control_path,
            seed=seed or 0,
        )
    if live:
        with Live(state, console=console, refresh_per_second=8, transient=False):
            result = run_experiment(
                experiment,
                state_dir=where,
                journal_path=journal,
                seed=seed,
                on_update=state.update,
                scope=scope,
                control_twin=comparison,
            )
        console.print()
    else:
        result = run_experiment(
            experiment,
            state_dir=where,
            journal_path=journal,
            seed=seed,
            scope=scope,
            control_twin=comparison,
        )
    raise_for_refusals(result)
    for line in _timeline(result.journal.get("bastion") or {}):
        console.print(line)
    table = Table(title="measured (from events)", show_header=True, header_style="bold")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    m = result.measurements
    for key in (
        "time_to_detect_s",
        "detected_by",
        "rto_s",
        "recovered",
        "steps_lost",
        "requests_failed",
        "files_lost",
        "faults_injected",
        "faults_reverted",
    ):
        table.add_row(key, escape(_fmt(m.get(key))))
    kpis = (result.journal.get("bastion") or {}).get("kpis")
    if kpis:
        console.print(_kpi_table(kpis))
        if kpis.get("divergence"):
            console.print(
                f"[red]diverged[/red] at {kpis['diverged_at_s']} s: {escape(kpis['divergence'])}",
                soft_wrap=True,
            )
    cost = (result.journal.get("bastion") or {}).get("cost") or {}
    for currency in cost.get("currencies", []):
        total, extra = cost["total"][currency], cost["extra"][currency]
        table.add_row(f"spend ({currency})", f"{total:.6g}")
        table.add_row(f"extra spend: retries, hedges, fallbacks ({currency})", f"{extra:.6g}")
    console.print(table)
    for problem in result.problems:
        console.print(f"[red]✗[/red] {escape(problem)}", soft_wrap=True)
    verdict = "[green]passed[/green]" if result.exit_code == 0 else "[red]failed[/red]"
    console.print(f"drill {verdict}: status {result.status}; journal {journal}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _gateway_of(twin: Any) -> str:
    """The twin's first service's gateway address (host:port), which must exist."""
    from bastion.errors import UsageError

    if not twin.exists():
        raise UsageError(
            f"drill run: no twin {twin.name!r} (make it with bastion twin up --name {twin.name})"
        )
    services = twin.manifest().services
    if not services:
        raise UsageError(f"drill run: twin {twin.name!r} has no service to load")
    return str(next(iter(services.values())).listen)


def _kpi_table(kpis: dict[str, Any]) -> Table:
    table = Table(title="KPIs: experiment twin vs control twin", header_style="bold")
    table.add_column("KPI")
    table.add_column("experiment", justify="right")
    table.add_column("control", justify="right")
    for key, label in (
        ("requests", "requests"),
        ("error_rate", "error rate"),
        ("p99_ms", "latency p99 (ms)"),
        ("goodput_rps", "goodput (/s)"),
    ):
        table.add_row(label, _fmt(kpis["experiment"].get(key)), _fmt(kpis["control"].get(key)))
    return table


def faults(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the fault library: each kind, what it does, its arguments."""
    from bastion.drill.actions import describe_faults

    rows = describe_faults()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(show_header=True, header_style="bold", show_lines=False)
    table.add_column("kind", style="cyan", no_wrap=True)
    table.add_column("what it does")
    table.add_column("arguments")
    table.add_column("revert")
    for row in rows:
        table.add_row(row["kind"], escape(row["does"]), escape(row["arguments"]), row["revertible"])
    console.print(table)
    console.print(
        "use in an experiment: provider: {type: python, module: bastion.drill.actions, "
        "func: inject, arguments: {fault: KIND, ...}}",
        soft_wrap=True,
    )


_VERDICT_STYLE = {"passed": "green", "failed": "red", "errored": "magenta", "skipped": "dim"}


def suite(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="The production manifest (its twin is drilled).")
    ] = DEFAULT_MANIFEST,
    short: Annotated[
        bool, typer.Option("--short", help="Short holds and sampling: seconds per scenario.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="Run only these scenarios (repeat, or comma-separate); see --list."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the faults' randomness.")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Where the journals go (default <state_dir>/drills/suite/<id>)."),
    ] = None,
    keep_twin: Annotated[
        bool, typer.Option("--keep-twin", help="Leave the twin 'suite' up afterwards.")
    ] = False,
    list_only: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the reference drill suite against a fresh sandbox twin of the system: each
    scenario's time to detect, RTO and RPO against the manifest's recovery targets, and a
    verdict (passed, failed, errored, skipped). Exit 1 if any failed or errored."""
    from bastion.drill.suite import SCENARIOS, run_suite, select

    if list_only:
        rows = [
            {"name": s.name, "title": s.title, "layer": s.layer, "recovery": s.loss}
            for s in select(only)
        ]
        if as_json:
            console.print_json(json.dumps(rows))
            return
        table = Table(show_header=True, header_style="bold")
        for column in ("scenario", "what", "layer", "judged by"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["name"], row["title"], row["layer"], f"recovery.{row['recovery']}")
        console.print(table)
        return
    if not file.is_file():
        from bastion.errors import UsageError

        raise UsageError(
            f"drill suite: manifest {file} does not exist; give the production manifest with -f"
        )
    select(only)  # bad names are exit 2 before anything is made
    total = len(select(only)) if only else len(SCENARIOS)
    done = 0

    def progress(what: str, data: dict[str, Any]) -> None:
        nonlocal done
        if as_json:
            return
        if what == "scenario.started":
            console.print(f"[dim]{done + 1}/{total}[/dim] {escape(str(data['name']))} ...")
        elif what == "scenario.finished":
            done += 1
            verdict = str(data["verdict"])
            style = _VERDICT_STYLE.get(verdict, "")
            console.print(
                f"      [{style}]{verdict}[/{style}] {escape(str(data['reason']))}",
                soft_wrap=True,
            )

    result = run_suite(
        file,
        short=short,
        only=only,
        seed=seed,
        output=output,
        keep_twin=keep_twin,
        on_progress=progress,
    )
    if as_json:
        console.print_json(json.dumps(result.to_json(), default=str))
    else:
        table = Table(
            title=f"drill suite {result.suite} (from events)", show_header=True, header_style="bold"
        )
        for column in ("scenario", "verdict", "detect", "RTO", "target", "RPO", "target", "why"):
            left = column in ("scenario", "verdict", "why")
            table.add_column(column, justify="left" if left else "right")
        for s in result.scenarios:
            style = _VERDICT_STYLE.get(s.verdict, "")
            rpo = _fmt(s.rpo_s) if s.stateful else "n/a"
            table.add_row(
                s.name,
                Text(s.verdict, style=style),
                _fmt(s.time_to_detect_s),
                _fmt(s.rto_s),
                _fmt(s.targets.get("rto_s")),
                rpo if s.verdict != "skipped" else "-",
                _fmt(s.targets.get("rpo_s")),
                "" if s.verdict == "passed" else escape(s.reason),
            )
        console.print(table)
        counts = ", ".join(f"{n} {v}" for v, n in result.counts.items())
        console.print(f"{counts}; journals in {escape(result.directory)}", soft_wrap=True)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Fault drills: inject real faults, measure recovery.", no_args_is_help=True
    )
    sub.command("run")(run)
    sub.command("faults")(faults)
    sub.command("suite")(suite)
    app.add_typer(sub, name="drill")

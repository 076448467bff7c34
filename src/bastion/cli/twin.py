"""``bastion twin up | down | status | load | record``: the sandbox twin of the manifest's system.

Exit 0 when done; 2 on bad input (no manifest, a twin that already exists or does not,
a port clash, a twin still running at ``down``); 1 when ``load`` got no answer at all.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console

__all__ = ["register"]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (keys in docs/cli-json.md).")
]
NameOption = Annotated[
    str, typer.Option("--name", help="The twin's name (several twins may stand side by side).")
]


def _twin(file: Path, name: str) -> Any:
    from bastion.twin import Twin

    return Twin(file, name)


def _print_json(doc: dict[str, Any]) -> None:
    console.print_json(json.dumps(doc))


def up(
    file: ManifestOption = DEFAULT_MANIFEST,
    name: NameOption = "twin",
    port_base: Annotated[
        int | None,
        typer.Option(help="Give the twin ports from this one up (default: free ports)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make an isolated copy of the system: its own state directory, ports and keys, and
    a copy-on-write view of the vault (objects shared, not copied). Every command then
    works on the twin with -f and the twin manifest it prints."""
    record = _twin(file, name).up(port_base=port_base)
    if as_json:
        _print_json(record.to_json())
        return
    shared = sum(r.shared_bytes for r in record.replicas)
    objects = sum(r.reflinked + r.linked for r in record.replicas)
    how = "reflinked" if any(r.reflinked for r in record.replicas) else "hard-linked"
    console.print(
        f"twin [bold]{escape(record.name)}[/bold] up in {record.seconds:.3f} s: "
        f"{objects} objects {how} ({shared / 2**20:.1f} MiB shared, none copied)",
        soft_wrap=True,
    )
    for prod, twin in record.ports.items():
        console.print(f"  port {prod} -> {twin}")
    console.print(f"  manifest: {escape(record.manifest)}", soft_wrap=True)


def down(
    file: ManifestOption = DEFAULT_MANIFEST,
    name: NameOption = "twin",
    as_json: JsonOption = False,
) -> None:
    """Remove the twin: everything twin up made, and nothing else."""
    removed = _twin(file, name).down()
    if as_json:
        _print_json({"name": name, "removed": removed})
        return
    console.print(f"twin {escape(name)} removed: {escape(', '.join(removed))}", soft_wrap=True)


def status(
    file: ManifestOption = DEFAULT_MANIFEST,
    name: NameOption = "twin",
    as_json: JsonOption = False,
) -> None:
    """Show the twin: where it is, its ports and whether something listens on them."""
    st = _twin(file, name).status()
    if as_json:
        _print_json(st.to_json())
        return
    if st.record is None:
        console.print(f"no twin {escape(name)} (it would be at {escape(st.root)})", soft_wrap=True)
        return
    table = Table(title=f"twin {name}", show_header=True, header_style="bold")
    table.add_column("production port", justify="right")
    table.add_column("twin port", justify="right")
    table.add_column("listening")
    for prod, twin in st.record.ports.items():
        table.add_row(str(prod), str(twin), "yes" if st.listening.get(twin) else "no")
    console.print(table)
    console.print(f"manifest: {escape(st.record.manifest)}", soft_wrap=True)
    console.print(f"created {st.record.created}; processes {list(st.pids) or 'none'}")


def load(
    file: ManifestOption = DEFAULT_MANIFEST,
    name: NameOption = "twin",
    service: Annotated[
        str | None, typer.Option(help="The service to load (default: the first one).")
    ] = None,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 20.0,
    seconds: Annotated[float, typer.Option(help="How long to send for.")] = 5.0,
    seed: Annotated[int, typer.Option(help="Seed for the synthetic inputs.")] = 0,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            help="Replay this recording (from bastion twin record) instead of synthetic load.",
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="With --replay: 1 is the recorded pace, 10 ten times faster.")
    ] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Replay synthetic load (seeded random inputs, a steady open-loop rate), or recorded
    load (--replay FILE, at the recorded pace times --speed), against the twin's gateway;
    start it first with bastion serve -f and the twin manifest."""
    from dataclasses import asdict

    from bastion import event_kinds as ek
    from bastion.errors import UnavailableError, UsageError
    from bastion.events import EventLog
    from bastion.twin import replay_synthetic

    twin = _twin(file, name)
    manifest = twin.manifest()
    if not manifest.services:
        raise UsageError(f"twin {name!r}: {twin.manifest_path} has no services to load")
    chosen = service or next(iter(manifest.services))
    if chosen not in manifest.services:
        known = ", ".join(manifest.services)
        raise UsageError(f"twin {name!r}: no service {chosen!r} (its services: {known})")
    if replay is not None:
        from bastion.twin import replay_recorded

        stats = replay_recorded(manifest.services[chosen].listen, replay, speed=speed, seed=seed)
        rate = stats.rate
    else:
        stats = replay_synthetic(
            manifest.services[chosen].listen, rate=rate, seconds=seconds, seed=seed
        )
    EventLog.in_state_dir(manifest.state_dir).emit(
        ek.TWIN_LOAD, subject=chosen, sent=stats.sent, ok=stats.ok, failed=stats.failed, rate=rate
    )
    if as_json:
        _print_json(asdict(stats))
    else:
        console.print(
            f"{stats.sent} requests to {stats.target} in {stats.seconds:.1f} s: "
            f"{stats.ok} ok, {stats.failed} failed; p50 {stats.p50_ms} ms, p99 {stats.p99_ms} ms"
        )
    if stats.ok == 0:
        raise UnavailableError(
            f"twin {name!r}: no request to {stats.target} was answered; is the twin's "
            f"gateway running (`bastion serve -f {twin.manifest_path}`)?"
        )


def record(
    to: Annotated[str, typer.Option("--to", help="The gateway to record in front of (host:port).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The recording to write.")],
    listen: Annotated[
        str, typer.Option(help="Where clients connect instead (host:port; port 0: any free).")
    ] = "127.0.0.1:0",
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: at Ctrl-C).")
    ] = None,
    bodies: Annotated[
        bool,
        typer.Option(
            "--bodies",
            help="Record request bodies too (secrets redacted; what users wrote is kept).",
        ),
    ] = False,
) -> None:
    """Record production's load: a proxy in front of the gateway writes each request's
    shape and time (method, path, body size, model; never headers or query strings, bodies
    only with --bodies) for bastion twin load --replay."""
    import threading

    from bastion.twin import Recorder

    done = threading.Event()
    with Recorder(to, output, bodies=bodies).start(listen) as rec:
        console.print(f"recording {escape(rec.upstream)} at {rec.url} into {escape(str(output))}")
        with contextlib.suppress(KeyboardInterrupt):
            done.wait(seconds)  # the recording's length (or Ctrl-C), not synchronisation
    console.print(f"{rec.rows} requests recorded in {escape(str(output))}")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="The sandbox twin: an isolated copy of the system to drill against.",
        no_args_is_help=True,
    )
    sub.command("up")(up)
    sub.command("down")(down)
    sub.command("status")(status)
    sub.command("load")(load)
    sub.command("record")(record)
    app.add_typer(sub, name="twin")

"""``bastion vault ...``: the artifact vault's commands. Parse, call the library, render."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from bastion.cli._common import (
    DEFAULT_MANIFEST,
    ManifestOption,
    console,
    err_console,
    load_manifest,
)
from bastion.errors import CheckFailed, UnavailableError, UsageError

if TYPE_CHECKING:  # bastion.vault loads when a vault command runs, not for every command
    from bastion.vault import ReplicaSetStatistics, ScrubReport, Snapshot, Vault

__all__ = ["register"]

app = typer.Typer(help="Content-addressed, replicated, signed snapshots of data and models.")


def _vault(file: Path, *, create: bool = True) -> Vault:
    from bastion.vault import Vault

    return Vault.from_manifest(load_manifest(file), create=create)


_FIX_REPLICA = (
    "fix the replica (mount its disk, free space, repair permissions), then run "
    "`bastion vault scrub` to copy what it lacks"
)


def _failed_since(before: ReplicaSetStatistics, after: ReplicaSetStatistics) -> list[str]:
    """``url: last error`` of each replica that failed between two readings."""
    return [
        f"{now.url}: {now.last_error}"
        for was, now in zip(before.replicas, after.replicas, strict=True)
        if now.failures > was.failures
    ]


def _tree(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {path.name: path}
    if not path.is_dir():
        raise UsageError(f"{path}: no such file or directory to put in the vault")
    return {
        p.relative_to(path).as_posix(): p
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@app.command()
def put(
    name: Annotated[str, typer.Argument(help="Artifact name, e.g. dataset/digits.")],
    path: Annotated[Path, typer.Argument(help="A file or a directory.")],
    lineage: Annotated[list[str], typer.Option(help="A ref this was made from.")] = [],  # noqa: B006
    label: Annotated[list[str], typer.Option(help="Labels to move here.")] = ["latest"],  # noqa: B006
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Store a file or directory as the next version of NAME."""
    if name.startswith("model/") and "prod" in label:
        # @prod on a model moves through the gates only (issue 13): a put would bypass them
        raise UsageError(
            f"vault put {name} --label prod: a model's @prod moves only through its gates; "
            f"put it without --label prod, then `bastion validate model {name}@latest` and "
            f"`bastion model promote {name}@latest` (or promote --force with the admin key)"
        )
    vault = _vault(file)
    tree = _tree(path)
    total = sum(p.stat().st_size for p in tree.values())
    with _progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn()
    ) as bar:
        # Vault.put reports no progress of its own: the bar pulses until every file is
        # chunked, stored on the replicas and the snapshot is signed, then fills.
        task = bar.add_task(f"put {name}: {len(tree)} files", total=None)
        result = vault.put(name, tree, lineage=lineage, labels=label)
        bar.update(task, total=total, completed=total)
    snap = result.snapshot
    console.print(
        f"{snap.ref}: {len(snap.files)} files, {snap.size:,} bytes, id {snap.id[:16]}, "
        f"on {len(result.replicas)}/{len(vault.stores)} replicas"
    )
    if result.missed:
        raise UnavailableError(
            f"{snap.ref} is stored, but on {len(result.replicas)} of {len(vault.stores)} "
            "replicas; not on "
            + "; ".join(f"{url} ({why})" for url, why in result.missed.items())
            + f"; {_FIX_REPLICA}"
        )


@app.command()
def get(
    ref: Annotated[str, typer.Argument(help="NAME[@REV]")],
    path: Annotated[str, typer.Argument(help="A file inside the snapshot.")],
    out: Annotated[Path | None, typer.Option("-o", help="Write here instead of stdout.")] = None,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Print (or write) one file of a snapshot, verified. A new -o file gets the mode the
    file had in the snapshot; an existing one keeps its own (as cp does)."""
    vault = _vault(file)
    snap = vault.snapshot(ref)
    data = vault.read(snap, path)
    if out is None:
        sys.stdout.buffer.write(data)
        return
    mode = snap.files[path].mode
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        os.fchmod(fd, mode)  # exactly the snapshot's, whatever the umask
    except FileExistsError:
        fd = os.open(out, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as sink:
        sink.write(data)


JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document (keys in docs/cli-json.md).")
]


def _snapshot_json(snap: Snapshot) -> dict[str, object]:
    return {
        "name": snap.name,
        "version": snap.version,
        "ref": snap.ref,
        "id": snap.id,
        "created": snap.created.isoformat(),
        "files": len(snap.files),
        "bytes": snap.size,
        "lineage": list(snap.lineage),
    }


def _print_json(doc: object) -> None:
    # plain print, not rich: no wrapping, no colour, whatever the terminal
    print(json.dumps(doc, sort_keys=True, default=str))


def _progress(*columns: str | ProgressColumn) -> Progress:
    """A progress bar on a terminal only: piped or --json output stays clean."""
    return Progress(*columns, console=err_console, disable=not err_console.is_terminal)


@app.command("ls")
def ls(
    prefix: Annotated[str, typer.Argument(help="Only names starting with this.")] = "",
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """List artifact names with their latest version and labels."""
    vault = _vault(file)
    table = Table("name", "latest", "labels", "files", "bytes", "created")
    artifacts = []
    for name in vault.names(prefix):
        snap = vault.snapshot(name)
        labels = vault.labels(name)
        artifacts.append({**_snapshot_json(snap), "labels": dict(labels)})
        table.add_row(
            name,
            str(snap.version),
            ", ".join(f"{k}@{v}" for k, v in labels.items()),
            str(len(snap.files)),
            f"{snap.size:,}",
            snap.created.isoformat(timespec="seconds"),
        )
    if as_json:
        _print_json({"artifacts": artifacts, "degraded": list(vault.degraded())})
        return
    console.print(table)
    if vault.degraded():
        console.print(f"[yellow]degraded: {', '.join(vault.degraded())} unreachable[/]")


@app.command()
def log(
    name: Annotated[str, typer.Argument(help="Artifact name.")],
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Every version of NAME, oldest first."""
    versions = _vault(file).versions(name)
    if as_json:
        _print_json({"name": name, "versions": [_snapshot_json(s) for s in versions]})
        return
    table = Table("version", "id", "created", "files", "bytes", "lineage")
    for snap in versions:
        table.add_row(
            str(snap.version),
            snap.id[:16],
            snap.created.isoformat(timespec="seconds"),
            str(len(snap.files)),
            f"{snap.size:,}",
            ", ".join(snap.lineage),
        )
    console.print(table)


Deep = Annotated[
    bool,
    typer.Option(
        "--deep",
        help="Decompress and hash every object instead of checking its seal (slower, "
        "independent of the signing key).",
    ),
]


def _scrub(
    file: Path, *, repair: bool, max_seconds: float | None, as_json: bool, deep: bool
) -> None:
    # verify changes nothing: not even a replica directory that has gone missing
    vault = _vault(file, create=repair)
    verb = "scrub" if repair else "verify"
    with _progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn()
    ) as bar:
        # the object count is known only once every replica is listed: the bar pulses
        task = bar.add_task(f"{verb}: objects checked", total=None)
        report = vault.scrub(
            repair=repair,
            max_seconds=max_seconds,
            deep=deep,
            progress=lambda n: bar.advance(task, n),
        )
    if as_json:
        _print_json(report.to_json())
    else:
        console.print(
            f"{'scrub' if repair else 'verify'}: {report.objects} objects, "
            f"{report.copies_checked} copies on {report.replicas} of {len(vault.stores)} "
            f"replicas, {report.bytes_checked / 1e6:,.1f} MB in {report.seconds:.2f} s "
            f"({report.gb_per_s:.2f} GB/s); {report.snapshots} snapshots; "
            f"bad copies {report.bad_copies}, repaired {report.repaired}, "
            f"repairs failed {len(report.repair_failed)}, "
            f"unrecoverable {len(report.unrecoverable)}; "
            f"{'deep' if report.deep else 'by seals'}, {report.decompressed} decompressed"
            + (f"; admin pin written on {len(report.pins_written)}" if report.pins_written else "")
            + ("" if report.complete else f"; budget spent, resumes after {report.cursor[:16]}")
        )
    problems = _scrub_problems(report, repair=repair)
    if problems:
        raise CheckFailed("; ".join(problems))


def _scrub_problems(report: ScrubReport, *, repair: bool) -> list[str]:
    """What a scrub or verify left undone or found wrong, each with the fix."""
    problems = []
    if not report.ok:
        problems.append(
            f"{len(report.unrecoverable)} objects and {len(report.bad_snapshots)} snapshots "
            "have no good copy on any replica"
        )
    if report.unreachable:
        problems.append(
            f"not checked: {', '.join(report.unreachable)} (missing or unreachable; mount "
            "its disk, or recreate the directory if the replica was lost, then run "
            "`bastion vault scrub` to rebuild it)"
        )
    if report.repair_failed:
        failed: dict[str, int] = {}
        for item in report.repair_failed:
            url = item.split(": ", 1)[0]
            failed[url] = failed.get(url, 0) + 1
        problems.append(
            f"{len(report.repair_failed)} repairs failed ("
            + ", ".join(f"{n} on {url}" for url, n in failed.items())
            + "; free space or fix permissions there, then run `bastion vault scrub` again)"
        )
    if report.pins_missing:
        fix = (
            "could not write it; fix the replica and run scrub again"
            if repair
            else "run `bastion vault scrub` to write it"
        )
        problems.append(f"no admin key pin on {', '.join(report.pins_missing)} ({fix})")
    if report.pins_mismatched:
        problems.append(
            f"the admin key pin (config/admin.pub) on {', '.join(report.pins_mismatched)} "
            "is not this vault's admin key; nothing deletes until it is put back (copy it "
            "from a replica whose pin matches, or from the admin key's .pub file)"
        )
    return problems


@app.command()
def verify(
    max_seconds: Annotated[float | None, typer.Option(help="Budget; resumes next run.")] = None,
    as_json: JsonOption = False,
    deep: Deep = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Check every object on every replica; change nothing. Exit 1 if anything is lost."""
    _scrub(file, repair=False, max_seconds=max_seconds, as_json=as_json, deep=deep)


@app.command()
def scrub(
    repair: Annotated[bool, typer.Option("--repair/--no-repair")] = True,
    max_seconds: Annotated[float | None, typer.Option(help="Budget; resumes next run.")] = None,
    as_json: JsonOption = False,
    deep: Deep = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Check every object on every replica and repair bad copies from good ones."""
    _scrub(file, repair=repair, max_seconds=max_seconds, as_json=as_json, deep=deep)


@app.command()
def protect(
    directory: Annotated[Path, typer.Argument(help="The working directory to guard.")],
    name: Annotated[str, typer.Option(help="Its artifact name, e.g. dataset/digits.")],
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Record a baseline snapshot of DIRECTORY and put it under the guard."""
    from bastion.vault._guard import protect as do_protect

    snap = do_protect(_vault(file), directory, name)
    console.print(f"protected {directory} as {snap.ref} ({len(snap.files)} files)")


@app.command()
def snapshot(
    directory: Annotated[Path, typer.Argument(help="A protected directory.")],
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Record a legitimate change to a protected directory (the guard stops flagging it)."""
    from bastion.vault._guard import snapshot_dir

    snap = snapshot_dir(_vault(file), directory)
    console.print(f"recorded {directory} as {snap.ref}")


@app.command()
def guard(
    restore: Annotated[
        bool, typer.Option("--restore", help="Put back the last good snapshot.")
    ] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Watch protected directories; detect tampering and ransomware; stop it (Ctrl-C ends)."""
    from bastion.events import EventLog
    from bastion.vault import Vault
    from bastion.vault._guard import Guard

    manifest = load_manifest(file)
    events = EventLog.in_state_dir(manifest.state_dir)
    vault = Vault.from_manifest(manifest, events=events)
    stop = threading.Event()
    with Guard(vault, restore=restore) as watcher:
        console.print(f"guarding {watcher.statistics().dirs} directories (Ctrl-C to stop)")
        try:
            for event in events.follow(kind="vault.guard.*", stop=stop):
                console.print(f"{event.kind}: {json.dumps(event.data, default=str)}")
        except KeyboardInterrupt:
            stop.set()


@app.command()
def restore(
    ref: Annotated[str, typer.Argument(help="NAME[@REV]")],
    dest: Annotated[Path, typer.Argument(help="Directory to restore into.")],
    clean: Annotated[bool, typer.Option(help="Remove files the snapshot lacks.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Restore into a directory that is not empty.")
    ] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Restore a snapshot bit-identical, every chunk verified, into a new or empty
    directory (--force: into one that holds files, overwriting those the snapshot has)."""
    vault = _vault(file)
    snap = vault.snapshot(ref)
    if not force:
        from bastion.vault._restore import require_empty

        require_empty(snap, dest)  # before the progress bar: a refusal writes nothing
    with _progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    ) as bar:
        task = bar.add_task(f"restore {snap.ref}", total=snap.size)
        lock = threading.Lock()

        def advance(n: int) -> None:
            with lock:
                bar.advance(task, n)

        before = vault.replicas.statistics()
        vault.restore(snap, dest, progress=advance, clean=clean, empty_only=not force)
        after = vault.replicas.statistics()
    console.print(f"restored {snap.ref} ({len(snap.files)} files, {snap.size:,} bytes) to {dest}")
    if after.repair_failures > before.repair_failures:
        raise UnavailableError(
            f"restored, but {after.repair_failures - before.repair_failures} bad copies met "
            "on the way could not be repaired ("
            + "; ".join(_failed_since(before, after))
            + f"); {_FIX_REPLICA}"
        )


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(help="NAME[@REV]")],
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """What produced REF: its data, code, config and run, as text or JSON."""
    graph = _vault(file).lineage(ref)
    if as_json:
        console.print_json(json.dumps(graph, default=str))
        return
    children: dict[str, list[str]] = {}
    for child, parent in graph["edges"]:
        children.setdefault(child, []).append(parent)

    def show(node: str, depth: int, seen: set[str]) -> None:
        info = graph["nodes"].get(node, {})
        note = "" if info.get("in_vault") else "  (not in the vault)"
        console.print(f"{'  ' * depth}{'└─ ' if depth else ''}{node}{note}")
        if node in seen:
            return
        for parent in children.get(node, []):
            show(parent, depth + 1, seen | {node})

    show(graph["root"], 0, set())


@app.command()
def gc(
    keep_last: Annotated[
        int | None, typer.Option(min=1, help="Newest versions to keep per name.")
    ] = None,
    keep_within_days: Annotated[
        float | None, typer.Option(min=0.0, help="Keep versions younger than this many days.")
    ] = None,
    grace_s: Annotated[float, typer.Option(help="Keep objects younger than this.")] = 3600.0,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Drop old versions, old checkpoints and unreferenced objects. Needs the admin key.

    Defaults come from vault.retention in bastion.yaml. Each job's checkpoints beyond
    its checkpoint.keep go, except the newest that reads back whole. Labelled versions
    and the lineage of every kept snapshot are always kept.
    """
    vault = _vault(file)
    skipped = vault.degraded()
    result = vault.gc(keep_last=keep_last, keep_within_days=keep_within_days, grace_s=grace_s)
    console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items()))
    unreached = [url for url in result.unreached if url not in skipped]
    if skipped or unreached:
        raise UnavailableError(
            "gc did not reach "
            + "; ".join([f"{url}: unreachable" for url in skipped] + unreached)
            + " (what it holds there is still there; bring the replica back and run "
            "`bastion vault gc` again)"
        )
    if result.unverified:
        raise CheckFailed(
            f"{len(result.unverified)} checkpoints do not read back whole (a chunk has no "
            f"good copy on any replica): {', '.join(result.unverified)}; they cannot be "
            "restored, and each job's newest good checkpoint was kept; run `bastion vault "
            "scrub` to see every loss"
        )


@app.command("serve")
def serve_cmd(
    listen: Annotated[
        str, typer.Option(help="host:port to listen on (port 0: any free one).")
    ] = "127.0.0.1:8790",
    max_upload: Annotated[
        int, typer.Option(help="The largest upload accepted, in bytes (413 beyond).")
    ] = 8 << 30,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Serve the vault over HTTP to token holders: jobs and replicas append and read with
    a scoped token (`bastion segment token`) instead of holding the signing key. Prints
    `PORT <n>` once listening."""
    import asyncio

    from bastion.vault._server import serve

    manifest = load_manifest(file)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen {listen!r}: expected host:port, e.g. 127.0.0.1:8790")

    def ready(bound: int) -> None:
        sys.stdout.write(f"PORT {bound}\n")
        sys.stdout.flush()
        err_console.print(f"vault server on http://{host}:{bound} (append-only for tokens)")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(manifest, host=host, port=int(port), max_upload=max_upload, ready=ready))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vault")

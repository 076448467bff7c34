"""``bastion train run | status``: supervise a training job; show how it is doing."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, err_console
from bastion.errors import CheckFailed, UsageError

__all__ = ["register"]


def run(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="JOB from the manifest, or with --name: -- CMD ARGS..."),
    ] = None,
    file: ManifestOption = DEFAULT_MANIFEST,
    name: Annotated[
        str | None, typer.Option("--name", help="Run an ad-hoc command as this job name.")
    ] = None,
    max_restarts: Annotated[int, typer.Option(help="Restart budget (--name only).")] = 10,
    heartbeat_timeout: Annotated[
        float | None, typer.Option(help="Seconds without a heartbeat = hung (--name only).")
    ] = None,
    grace: Annotated[float, typer.Option(help="SIGTERM grace seconds (--name only).")] = 10.0,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start a new run from step 0, even if the job already finished or has "
            "checkpoints (they stay in the vault).",
        ),
    ] = False,
) -> None:
    """Run a job under the supervisor: restart on crash (backoff, budget), recover hangs,
    handle preemption, fail over between worker slots. A job that already finished is not
    run again unless --fresh; Ctrl-C stops it after its emergency checkpoint (exit 130)."""
    from bastion.events import EventLog
    from bastion.manifest import load
    from bastion.supervise import Backoff
    from bastion.train import JobSupervisor, check_job_name, job_status

    words = list(args or [])
    if name is not None:
        check_job_name(name, where="--name")
        if not words:
            raise UsageError("train run --name N needs a command after --, e.g. -- python x.py")
        manifest = load(file) if file.exists() else None
        state_dir = manifest.state_dir if manifest is not None else Path(".bastion")
        sup = JobSupervisor(
            name,
            words,
            state_dir=state_dir,
            events=EventLog.in_state_dir(state_dir),
            max_restarts=max_restarts,
            backoff=Backoff(initial=0.5, cap=30.0),
            heartbeat_timeout_s=heartbeat_timeout,
            grace_s=grace,
            manifest_path=manifest.path if manifest is not None else None,
            fresh=fresh,
        )
    else:
        if len(words) != 1:
            raise UsageError(
                "train run takes one JOB from the manifest (or --name N -- CMD...); "
                f"got {' '.join(words) or 'nothing'}"
            )
        sup = JobSupervisor.from_manifest(load(file), words[0], fresh=fresh)
        sup.check()
    finished = sup.finished_run()
    if finished is not None:
        console.print(
            f"{sup.name}: already finished (run {finished} succeeded with this command); "
            "nothing to do. To train it again from step 0: "
            f"`{_again(name, words, file, fresh=True)}`"
        )
        return
    console.print(f"supervising {sup.name} (log: {sup.log_path})")
    result = sup.run()
    line = f"{result.job}: {result.state} after {result.restarts} restarts (run {result.run_id})"
    if result.state == "stopped" and result.stop_signal is not None:
        with EventLog.in_state_dir(sup.state_dir) as log:
            last = job_status(sup.state_dir, log, sup.name).last_checkpoint
        sig = signal.Signals(result.stop_signal).name
        saved = f"last checkpoint: step {last.step}" if last else "no checkpoint was saved"
        console.print(
            f"{line}: stopped by {sig}; {saved}; `{_again(name, words, file)}` resumes from it"
        )
        raise typer.Exit(128 + result.stop_signal)
    if result.ok or result.state == "stopped":
        console.print(line)
        return
    err_console.print(f"{line}: {result.reason}")
    if result.exit_code == 2:
        raise typer.Exit(2)
    raise CheckFailed(f"job {result.job} failed: {result.reason} (see {sup.log_path})")


def _again(name: str | None, words: list[str], file: Path, *, fresh: bool = False) -> str:
    """The command that runs this job again, as the user would type it."""
    parts = ["bastion", "train", "run"]
    if file != DEFAULT_MANIFEST:
        parts += ["-f", str(file)]
    if fresh:
        parts.append("--fresh")
    if name is None:
        return shlex.join([*parts, words[0]])
    return shlex.join([*parts, "--name", name, "--", *words])


def status(
    job: Annotated[str | None, typer.Argument(help="One job (default: every job).")] = None,
    file: ManifestOption = DEFAULT_MANIFEST,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each job's state, restarts, hangs, last checkpoint and steps lost."""
    from bastion.events import EventLog
    from bastion.manifest import load
    from bastion.train import job_status

    manifest = load(file)
    names = [job] if job else sorted(manifest.jobs)
    with EventLog.in_state_dir(manifest.state_dir) as log:
        rows = [job_status(manifest.state_dir, log, n) for n in names]
    if as_json:
        console.print_json(json.dumps([r.to_json() for r in rows]))
        return
    table = Table("job", "status", "restarts", "hangs", "last checkpoint", "steps lost", "run")
    for r in rows:
        last = r.last_checkpoint
        table.add_row(
            r.job,
            r.status,
            str(r.restarts),
            str(r.hangs),
            f"step {last.step} at {last.at}" if last else "none",
            str(r.steps_lost),
            r.run_id or "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Resilient training: supervised runs and their status.")
    sub.command("run")(run)
    sub.command("status")(status)
    app.add_typer(sub, name="train")

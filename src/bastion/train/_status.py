"""``bastion train status``: a job's state, restarts, last checkpoint and steps lost, as a
view over the event log and the job's state file.

Owns: deriving those figures (``JobStatus``) and the recovery split of each restart
(``Recovery``); every figure comes from an event, so a report can recompute it.

Events of one restart come from two processes (the supervisor: exited, started; the
worker: restored, first step), and a write can wait for the log's lock, so the log's
order is not the order things happened in: sequences are read in ``at_ns`` order (the
row's ``mono_ns``, one clock for every process on the machine).

Must never: write anything.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.events import Event, EventLog

__all__ = ["JobStatus", "LastCheckpoint", "Recovery", "job_status", "recovery_timeline"]


@dataclass(frozen=True)
class LastCheckpoint:
    """The newest checkpoint the run saved (from its ``train.checkpoint.saved``)."""

    name: str | None
    """Its vault name, ``ckpt/<job>/step-NNNNNN``."""
    step: int | None
    at: str
    """When it became durable, UTC, ISO 8601 to the second."""
    stall_s: float | None
    """Loop time the save blocked for."""
    persist_s: float | None
    """Commit to durable, on the writer thread."""


@dataclass(frozen=True)
class JobStatus:
    """Everything ``bastion train status`` shows for one job's latest run."""

    job: str
    run_id: str | None
    status: str
    """``running``, ``succeeded``, ``failed``, ``stopped``, or ``unknown`` (no run)."""
    reason: str
    slot: str | None
    """The worker slot it runs (or last ran) on."""
    restarts: int
    hangs: int
    preemptions: int
    steps_lost: int
    """Steps done before a failure and done again after the resume, summed."""
    corrupt_checkpoints_skipped: int
    last_checkpoint: LastCheckpoint | None
    checkpoints: int
    """Checkpoints saved in this run."""
    final_state_hash: str | None
    """The script's hash of weights and optimizer state at its end (``train.finished``)."""
    last_exit: dict[str, Any] | None
    """The worker's last exit as the supervisor saw it (code, signal, ...)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recovery:
    """One restart, split by the events of one monotonic clock (nanoseconds)."""

    exited_ns: int
    """The supervisor saw the worker exit."""
    reason: str | None
    started_ns: int
    """The next worker started (or a warm standby took over)."""
    warm: bool
    restored_ns: int
    """The worker restored its checkpoint."""
    restore_s: float | None
    step: int | None
    """The step it resumed from."""
    first_step_ns: int
    """Its first step after the resume finished."""


def _in_time_order(events: list[Event]) -> list[Event]:
    """When each happened (``mono_ns``), the log's order breaking ties (see the module)."""
    return sorted(events, key=lambda e: (e.mono_ns, e.id))


def _latest_run(events: list[Event]) -> str | None:
    for e in reversed(events):
        if e.kind in (ek.TRAIN_RUN_STARTED, ek.TRAIN_SUPERVISOR_RESUMED):
            return str(e.data.get("run_id") or "") or None
    return None


def job_status(state_dir: Path, events: EventLog, job: str) -> JobStatus:
    """Everything ``bastion train status`` shows for one job."""
    all_events = events.query(kind="train.*", subject=job)
    state: dict[str, Any] = {}
    with_state = Path(state_dir) / "train" / job / "supervisor.json"
    with contextlib.suppress(OSError, ValueError):
        state = dict(json.loads(with_state.read_text()))
    run_id = state.get("run_id") or _latest_run(all_events)
    run: list[Event] = []
    started = False
    for e in all_events:
        if e.kind == ek.TRAIN_RUN_STARTED:
            started = e.data.get("run_id") == run_id
            if started:
                run = []
        if started or e.data.get("run_id") == run_id:
            run.append(e)
    if not run:
        run = all_events
    saved = [e for e in run if e.kind == ek.TRAIN_CHECKPOINT_SAVED]
    steps_lost = 0
    pending_exit: int | None = None
    for e in _in_time_order(run):
        if (
            e.kind in (ek.TRAIN_EXITED, ek.TRAIN_SUPERVISOR_RESUMED)
            and e.data.get("last_step") is not None
        ):
            pending_exit = int(e.data["last_step"])
        elif e.kind == ek.TRAIN_RESTORED and pending_exit is not None:
            steps_lost += max(0, pending_exit - int(e.data.get("step") or 0))
            pending_exit = None
    last = saved[-1] if saved else None
    finished = next((e for e in reversed(run) if e.kind == ek.TRAIN_FINISHED), None)
    return JobStatus(
        job=job,
        run_id=run_id,
        status=state.get("status", "unknown" if not run else "running"),
        reason=state.get("reason", ""),
        slot=state.get("slot"),
        restarts=sum(1 for e in run if e.kind == ek.TRAIN_RESTARTING),
        hangs=sum(1 for e in run if e.kind == ek.TRAIN_HANG),
        preemptions=sum(1 for e in run if e.kind == ek.TRAIN_PREEMPTED),
        steps_lost=steps_lost,
        corrupt_checkpoints_skipped=sum(1 for e in run if e.kind == ek.TRAIN_CHECKPOINT_CORRUPT),
        last_checkpoint=(
            LastCheckpoint(
                name=last.data.get("name"),
                step=last.data.get("step"),
                at=last.time.isoformat(timespec="seconds"),
                stall_s=last.data.get("stall_s"),
                persist_s=last.data.get("persist_s"),
            )
            if last
            else None
        ),
        checkpoints=len(saved),
        final_state_hash=finished.data.get("state_hash") if finished else None,
        last_exit=state.get("last_exit"),
    )


def recovery_timeline(events: EventLog, job: str, *, after_id: int = 0) -> list[Recovery]:
    """For each restart after ``after_id``: the moments of exit seen, restart, restore and
    first step (each event's ``mono_ns``: one clock for every process on the machine)."""
    out: list[Recovery] = []
    current: dict[str, Any] | None = None
    for e in _in_time_order(events.query(subject=job, after_id=after_id)):
        if e.kind == ek.TRAIN_EXITED and e.data.get("code") != 0:
            current = {"exited_ns": e.mono_ns, "reason": e.data.get("reason")}
        elif current is not None and e.kind == ek.TRAIN_STARTED:
            current["started_ns"] = e.mono_ns
            current["warm"] = bool(e.data.get("warm"))
        elif current is not None and e.kind == ek.TRAIN_RESTORED and "started_ns" in current:
            current["restored_ns"] = e.mono_ns
            current["restore_s"] = e.data.get("restore_s")
            current["step"] = e.data.get("step")
        elif current is not None and e.kind == ek.TRAIN_STEP_FIRST and "restored_ns" in current:
            out.append(Recovery(**current, first_step_ns=e.mono_ns))
            current = None
    return out

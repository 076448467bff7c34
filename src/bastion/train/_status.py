"""``bastion train status``: a job's state, restarts, last checkpoint and steps lost, as a
view over the event log and the job's state file.

Owns: deriving those figures; every one comes from an event, so a report can recompute
them.

Must never: write anything.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from bastion.events import Event, EventLog

__all__ = ["job_status", "recovery_timeline"]


def _latest_run(events: list[Event]) -> str | None:
    for e in reversed(events):
        if e.kind in ("train.run.started", "train.supervisor.resumed"):
            return str(e.data.get("run_id") or "") or None
    return None


def job_status(state_dir: Path, events: EventLog, job: str) -> dict[str, Any]:
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
        if e.kind == "train.run.started":
            started = e.data.get("run_id") == run_id
            if started:
                run = []
        if started or e.data.get("run_id") == run_id:
            run.append(e)
    if not run:
        run = all_events
    restarts = sum(1 for e in run if e.kind == "train.restarting")
    hangs = sum(1 for e in run if e.kind == "train.hang")
    saved = [e for e in run if e.kind == "train.checkpoint.saved"]
    corrupt = [e for e in run if e.kind == "train.checkpoint.corrupt"]
    steps_lost = 0
    pending_exit: int | None = None
    for e in run:
        if (
            e.kind in ("train.exited", "train.supervisor.resumed")
            and e.data.get("last_step") is not None
        ):
            pending_exit = int(e.data["last_step"])
        elif e.kind == "train.restored" and pending_exit is not None:
            steps_lost += max(0, pending_exit - int(e.data.get("step") or 0))
            pending_exit = None
    last = saved[-1] if saved else None
    finished = next((e for e in reversed(run) if e.kind == "train.finished"), None)
    return {
        "job": job,
        "run_id": run_id,
        "status": state.get("status", "unknown" if not run else "running"),
        "reason": state.get("reason", ""),
        "slot": state.get("slot"),
        "restarts": restarts,
        "hangs": hangs,
        "preemptions": sum(1 for e in run if e.kind == "train.preempted"),
        "steps_lost": steps_lost,
        "corrupt_checkpoints_skipped": len(corrupt),
        "last_checkpoint": (
            {
                "name": last.data.get("name"),
                "step": last.data.get("step"),
                "at": last.time.isoformat(timespec="seconds"),
                "stall_s": last.data.get("stall_s"),
                "persist_s": last.data.get("persist_s"),
            }
            if last
            else None
        ),
        "checkpoints": len(saved),
        "final_state_hash": finished.data.get("state_hash") if finished else None,
        "last_exit": state.get("last_exit"),
    }


def recovery_timeline(events: EventLog, job: str, *, after_id: int = 0) -> list[dict[str, Any]]:
    """For each restart after ``after_id``: seconds from the exit seen to restart, restore
    and first step (``mono_ns`` is one clock for every process on the machine)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for e in events.query(subject=job, after_id=after_id):
        mono = int(e.data.get("mono_ns") or e.mono_ns)
        if e.kind == "train.exited" and e.data.get("code") != 0:
            current = {"exited_ns": mono, "reason": e.data.get("reason")}
        elif current is not None and e.kind == "train.started":
            current["started_ns"] = mono
            current["warm"] = bool(e.data.get("warm"))
        elif current is not None and e.kind == "train.restored":
            current["restored_ns"] = mono
            current["restore_s"] = e.data.get("restore_s")
            current["step"] = e.data.get("step")
        elif current is not None and e.kind == "train.step.first":
            current["first_step_ns"] = mono
            out.append(current)
            current = None
    return out

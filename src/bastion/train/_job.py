"""The job supervisor behind ``bastion train run``: run a training job as a child process
and keep it going through crashes, hangs, preemption and slot failures.

Owns: the mapping from a manifest job to ``bastion.supervise`` (restart policy, heartbeat,
grace), the job's runtime directory ``<state_dir>/train/<job>/`` (heartbeat, state file,
log), the ``train.*`` lifecycle events, slot failover, and picking a run back up after the
supervisor itself was killed.

Must never: restart without a budget, restart a job that failed on its own
configuration (exit 2: a restart fails the same way), or leave a child behind when
asked to stop (SIGTERM, grace, SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bastion import event_kinds as ek
from bastion.errors import BastionError, UsageError
from bastion.events import EventLog, Relay
from bastion.manifest import Manifest
from bastion.supervise import (
    Backoff,
    ProcessSpec,
    RestartBudget,
    Supervisor,
    SupervisorStatistics,
    heartbeat_progress,
    pid_alive,
)
from bastion.train._slots import LocalSlot, SlotPicker, WorkerSlot, slots_from_manifest
from bastion.train._store import require_signing_key

__all__ = ["PRELOAD", "JobResult", "JobStatistics", "JobSupervisor"]

# What a warm standby imports before it is needed: torch, and torch._dynamo, which the
# first optimizer imports lazily (about a second on 2 cores), plus Bastion's own side.
PRELOAD = (
    "torch",
    "torch.optim",
    "torch._dynamo",
    "numpy",
    "safetensors.torch",
    "bastion.manifest",
    "bastion.events",
    "bastion.vault",
    "bastion.train",
)


@dataclass(frozen=True)
class JobResult:
    job: str
    run_id: str
    state: str
    restarts: int
    reason: str
    exit_code: int | None

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True)
class JobStatistics:
    """What a ``JobSupervisor`` is doing (``statistics()``)."""

    job: str
    run_id: str
    """This run's id ("" before ``run()``); kept across a supervisor's own restart."""
    slot: str | None
    """The worker slot the job runs on now."""
    slot_failures: dict[str, str]
    """The last reason each slot that failed a check was found unusable."""
    supervisor: SupervisorStatistics | None
    """The process supervisor's ``statistics()``; None before ``run()``."""


class JobSupervisor:
    """Run one job until it succeeds, fails for good, or is stopped."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        state_dir: Path,
        events: EventLog,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
        segment: str = "",
        max_restarts: int = 10,
        healthy_after_s: float | None = 300.0,
        backoff: Backoff | None = None,
        heartbeat_timeout_s: float | None = 60.0,
        grace_s: float = 10.0,
        slots: Sequence[WorkerSlot] = (),
        manifest_path: Path | None = None,
        seed: int | None = None,
        warm_standby: bool = True,
        startup_timeout_s: float | None = 120.0,
        preload: Sequence[str] = PRELOAD,
    ) -> None:
        if not command:
            raise UsageError(f"job {name!r}: the command is empty; give the program to run")
        self.name = name
        # "python" means the interpreter Bastion runs in (its venv has torch), not
        # whatever python is first on PATH.
        self.command = [sys.executable if command[0] in ("python", "python3") else command[0]]
        self.command += list(command[1:])
        self.state_dir = Path(state_dir)
        self.events = events
        self.workdir = workdir
        self.env = dict(env or {})
        self.segment = segment
        self.max_restarts = max_restarts
        self.healthy_after_s = healthy_after_s
        self.backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.grace_s = grace_s
        self.picker = SlotPicker(list(slots) or [LocalSlot("local")])
        self.manifest_path = manifest_path
        self.rng = random.Random(seed)
        self.warm_standby = warm_standby
        self.startup_timeout_s = startup_timeout_s
        self.preload = tuple(preload)
        self.dir = self.state_dir / "train" / name
        self.heartbeat_path = self.dir / "heartbeat"
        self.state_path = self.dir / "supervisor.json"
        self.log_path = self.dir / "job.log"
        self.run_id = ""
        self.resumed = False
        self.supervisor: Supervisor | None = None
        self._slot: WorkerSlot | None = None
        # set by from_manifest: run() first checks that checkpoints can be signed
        self._manifest: Manifest | None = None

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, job: str, *, events: EventLog | None = None
    ) -> JobSupervisor:
        """The manifest's job. Its checkpoints go to the manifest's vault (or the default
        one, see ``bastion.train``), so ``run()`` refuses to start while that vault
        cannot sign (``UsageError`` naming the fix, exit 2)."""
        cfg = manifest.jobs.get(job)
        if cfg is None:
            known = ", ".join(sorted(manifest.jobs)) or "none"
            raise UsageError(
                f"{manifest.path or 'bastion.yaml'}: no job {job!r} (jobs: {known}); "
                "add it under jobs: or pick one of those"
            )
        sup = cls(
            job,
            cfg.command,
            state_dir=Path(manifest.state_dir),
            events=events or EventLog.in_state_dir(manifest.state_dir),
            workdir=cfg.workdir,
            env=cfg.env,
            segment=cfg.segment or "",
            max_restarts=cfg.restart.max,
            healthy_after_s=cfg.restart.healthy_after_s,
            backoff=Backoff(initial=cfg.restart.backoff_s, cap=cfg.restart.backoff_max_s),
            heartbeat_timeout_s=cfg.heartbeat_timeout_s,
            grace_s=cfg.grace_s,
            slots=slots_from_manifest(cfg),
            manifest_path=manifest.path,
            warm_standby=cfg.warm_standby,
            startup_timeout_s=cfg.startup_timeout_s,
        )
        sup._manifest = manifest
        return sup

    # -- state file and events -----------------------------------------------------------
    def _emit(self, kind: ek.Kind, *, at_ns: int | None = None, **data: Any) -> None:
        self.events.emit(
            kind, self.name, segment=self.segment or None, at_ns=at_ns, run_id=self.run_id, **data
        )

    def _write_state(self, **fields: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        current = self._read_state()
        current.update(fields)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, sort_keys=True))
        tmp.replace(self.state_path)

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _pick_up(self) -> int:
        """Continue a run whose supervisor died: same run id, its restarts counted, and
        its orphaned child (if alive) stopped politely so it writes its checkpoint."""
        state = self._read_state()
        if state.get("status") != "running" or not state.get("run_id"):
            self.run_id = uuid.uuid4().hex[:12]
            self.resumed = False
            return 0
        self.resumed = True
        self.run_id = str(state["run_id"])
        restarts = len(
            [
                e
                for e in self.events.query(kind=ek.TRAIN_RESTARTING, subject=self.name)
                if e.data.get("run_id") == self.run_id
            ]
        )
        orphan = state.get("child_pid")
        adopted = False
        if isinstance(orphan, int) and orphan > 0 and pid_alive(orphan):
            adopted = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGTERM)
                os.killpg(orphan, signal.SIGCONT)  # a stopped orphan cannot act on SIGTERM
            end = time.monotonic() + self.grace_s
            while pid_alive(orphan) and time.monotonic() < end:
                time.sleep(0.02)  # polling an unrelated pid: nothing to wait on but time
            if pid_alive(orphan):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(orphan, signal.SIGKILL)
        self._emit(
            ek.TRAIN_SUPERVISOR_RESUMED,
            restarts_so_far=restarts,
            orphan_pid=orphan,
            orphan_stopped=adopted,
            last_step=heartbeat_progress(self.heartbeat_path),
        )
        return restarts

    # -- the supervised process ----------------------------------------------------------
    def _spec(self, attempt: int) -> ProcessSpec:
        slot, failed = self.picker.pick()
        for name, why in failed:
            self._emit(ek.TRAIN_SLOT_FAILED, slot=name, reason=why)
        if self._slot is not None and slot.name != self._slot.name:
            self._emit(ek.TRAIN_FAILOVER, from_slot=self._slot.name, to_slot=slot.name)
        self._slot = slot
        env = {
            **self.env,
            **slot.env(),
            "BASTION_JOB": self.name,
            "BASTION_RUN_ID": self.run_id,
            "BASTION_STATE_DIR": str(self.state_dir),
        }
        if self.manifest_path is not None:
            env["BASTION_MANIFEST"] = str(self.manifest_path)
        return ProcessSpec(
            argv=self.command,
            cwd=self.workdir,
            env=env,
            name=self.name,
            log_path=self.log_path,
        )

    def _on_event(self, kind: str, at_ns: int | None, data: dict[str, Any]) -> None:
        data = dict(data)
        if self._slot is not None:
            data.setdefault("slot", self._slot.name)
        if kind == "started":
            self._write_state(child_pid=data.get("pid"), slot=data.get("slot"))
            self._emit(ek.TRAIN_STARTED, at_ns=at_ns, **data)
            if data.get("attempt", 1) > 1:
                self._emit(ek.TRAIN_RESTARTED, at_ns=at_ns, **data)
            return
        if kind == "exited":
            data["last_step"] = heartbeat_progress(self.heartbeat_path)
            self._write_state(child_pid=None, last_exit=data)
        if kind in ("budget_exhausted", "fatal"):
            # one kind for "the job gave up", whatever the reason (status and reports
            # look for it); the supervisor's own word is the cause
            data["cause"] = kind
            self._emit(ek.TRAIN_FAILED, at_ns=at_ns, **data)
            return
        # the supervisor's other life-cycle steps, under this job's prefix
        self._emit(ek.ALL[f"train.{kind}"], at_ns=at_ns, **data)

    def run(self, *, handle_signals: bool = True) -> JobResult:
        """Supervise until the job ends; SIGTERM/SIGINT to the supervisor stop the job
        politely (it writes an emergency checkpoint) and end supervision."""
        self.check()
        preloaded = self._pick_up()
        budget = RestartBudget(max_restarts=self.max_restarts)
        budget.preload(preloaded)
        sup = Supervisor(
            self._spec,
            backoff=self.backoff,
            budget=budget,
            restart_on="failure",
            heartbeat_path=self.heartbeat_path,
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            grace_s=self.grace_s,
            fatal_exit_codes=(2,),
            startup_timeout_s=self.startup_timeout_s,
            healthy_after_s=self.healthy_after_s,
            warm_standby=self.warm_standby,
            preload=self.preload,
            events=Relay(lambda kind, _subject, at_ns, data: self._on_event(kind, at_ns, data)),
            rng=self.rng,
        )
        sup.restarts = preloaded
        self.supervisor = sup
        self._write_state(
            run_id=self.run_id,
            status="running",
            supervisor_pid=os.getpid(),
            command=self.command,
        )
        if not self.resumed:
            self._emit(
                ek.TRAIN_RUN_STARTED,
                command=self.command,
                slots=[s.describe() for s in self.picker.slots],
                max_restarts=self.max_restarts,
                heartbeat_timeout_s=self.heartbeat_timeout_s,
            )
        previous: dict[signal.Signals, Any] = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            outcome = sup.run()
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="error", reason=str(exc))
            self._write_state(status="failed", reason=str(exc), child_pid=None)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._write_state(status=outcome.state, reason=outcome.reason)
        code = outcome.last_exit.code if outcome.last_exit else None
        return JobResult(
            self.name, self.run_id, outcome.state, outcome.restarts, outcome.reason, code
        )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.supervisor is not None:
            self.supervisor.request_stop()

    def check(self) -> None:
        """Refuse a job that cannot start: a manifest job's checkpoints need a vault that
        can sign (``UsageError`` naming the fix, exit 2, and a ``train.failed`` event).
        Without this the job would fail at its first checkpoint; ``run()`` checks first."""
        if self._manifest is None:
            return
        try:
            require_signing_key(self._manifest, who=self.name)
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="config", reason=str(exc))
            raise

    def statistics(self) -> JobStatistics:
        return JobStatistics(
            job=self.name,
            run_id=self.run_id,
            slot=self._slot.name if self._slot else None,
            slot_failures=dict(self.picker.failures),
            supervisor=self.supervisor.statistics() if self.supervisor else None,
        )

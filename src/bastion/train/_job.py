"""The job supervisor behind ``bastion train run``: run a training job as a child process
and keep it going through crashes, hangs, preemption and slot failures.

Owns: the mapping from a manifest job to ``bastion.supervise`` (restart policy, heartbeat,
grace), the job's runtime directory ``<state_dir>/train/<job>/`` (heartbeat, state file,
log), the ``train.*`` lifecycle events, slot failover, and picking a run back up after the
supervisor itself was killed.

A job whose last run succeeded with the same command, environment and working directory
is not run again (``JobResult.already_finished``): its worker would restore the final
checkpoint, train nothing and store the model again. ``fresh=True`` starts a new run from
step 0 (the worker restores only that run's checkpoints, ``BASTION_FRESH_RUN``).

Must never: restart without a budget, restart a job that failed on its own
configuration (exit 2: a restart fails the same way), leave a child behind when asked
to stop (SIGTERM, grace, SIGKILL), or signal a process it cannot show is its own worker
(a dead worker's pid may belong to someone else by now).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
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
from bastion.events import EventLog, Relay, redact
from bastion.manifest import Manifest
from bastion.supervise import (
    Backoff,
    Child,
    ProcessSpec,
    RestartBudget,
    Supervisor,
    SupervisorStatistics,
    heartbeat_progress,
    pid_alive,
)
from bastion.train._env import ENV_FRESH_RUN, ENV_JOB, ENV_MANIFEST, ENV_RUN_ID, ENV_STATE_DIR
from bastion.train._ray import RayChild, RaySlot, run_name, stop_orphans
from bastion.train._slots import LocalSlot, SlotPicker, WorkerSlot, slots_from_manifest
from bastion.train._store import require_signing_key

__all__ = ["PRELOAD", "JobResult", "JobStatistics", "JobSupervisor", "check_job_name"]

# The manifest's rule for ids (bastion.manifest's ``Id``): an ad-hoc `--name` job gets
# the same, so its events, state directory and checkpoint names look like a manifest job's.
_JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def check_job_name(name: str, *, where: str = "job name") -> str:
    """``name`` if it is a valid job id (as in the manifest); else a ``UsageError``
    saying the rule and a name that would do."""
    if _JOB_NAME.match(name):
        return name
    fixed = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).lstrip("_.-")[:64] or "job"
    raise UsageError(
        f"{where} {name!r} is not a valid job id: use lower-case letters, digits, '.', '_' "
        f"or '-', starting with a letter or digit, at most 64 (e.g. {fixed!r})"
    )


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
    """How one ``JobSupervisor.run()`` ended."""

    job: str
    run_id: str
    state: str
    """``succeeded``, ``failed`` or ``stopped``."""
    restarts: int
    reason: str
    exit_code: int | None
    """The worker's last exit code (None: killed by a signal, or nothing ran)."""
    already_finished: bool = False
    """Nothing ran: the job's last run (``run_id``) had succeeded with this command."""
    stop_signal: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped supervision, for a ``stopped`` run."""

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
        fresh: bool = False,
    ) -> None:
        check_job_name(name)
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
        self.fresh = fresh
        self._fresh_run: str | None = None
        self._stop_signal: int | None = None
        self.dir = self.state_dir / "train" / name
        self.heartbeat_path = self.dir / "heartbeat"
        self.state_path = self.dir / "supervisor.json"
        self.move_path = self.dir / MOVE_FILE
        self._move_requested = False
        self.log_path = self.dir / "job.log"
        self.run_id = ""
        self.resumed = False
        self.supervisor: Supervisor | None = None
        self._slot: WorkerSlot | None = None
        # set by from_manifest: run() first checks that checkpoints can be signed
        self._manifest: Manifest | None = None
        # with a vault server (vault.server): the worker's BASTION_VAULT_URL and token
        # file, minted and refreshed by bastion.segment.JobTokens for the run
        self._token_env: dict[str, str] = {}

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, job: str, *, events: EventLog | None = None, fresh: bool = False
    ) -> JobSupervisor:
        """The manifest's job. Its checkpoints go to the manifest's vault (or the default
        one, see ``bastion.train``), so ``run()`` refuses to start while that vault
        cannot sign (``UsageError`` naming the fix, exit 2). ``fresh``: see the module."""
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
            slots=slots_from_manifest(cfg, name=job, source=str(manifest.path or "bastion.yaml")),
            manifest_path=manifest.path,
            warm_standby=cfg.warm_standby,
            startup_timeout_s=cfg.startup_timeout_s,
            fresh=fresh,
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
        # The command line can carry a key (``--api-key=...``); the state file is read by
        # people and tools, so it holds what the event log would: the redacted form.
        current.update(redact(fields))
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, sort_keys=True))
        tmp.replace(self.state_path)

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _config_digest(self) -> str:
        """What makes two runs the same job: command, environment, working directory (a
        digest, so no environment value is written down)."""
        blob = json.dumps(
            [self.command, sorted(self.env.items()), str(self.workdir or "")], sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def finished_run(self) -> str | None:
        """The id of the job's last run if it succeeded with this command, environment
        and working directory (``run()`` would then run nothing); None otherwise, and
        always with ``fresh``."""
        state = self._read_state()
        run_id = state.get("run_id")
        if self.fresh or state.get("status") != "succeeded" or not run_id:
            return None
        config = state.get("config")
        if config is not None:
            same = config == self._config_digest()
        else:
            same = state.get("command") == self.command  # a state file from before digests
        return str(run_id) if same else None

    def _pick_up(self) -> int:
        """Continue a run whose supervisor died: same run id, its restarts counted, and
        its orphaned child (if it is still running) stopped politely so it writes its
        checkpoint. With ``fresh``, the orphan is stopped all the same, and a new run
        begins."""
        state = self._read_state()
        if state.get("status") != "running" or not state.get("run_id"):
            self._new_run()
            return 0
        orphan = state.get("child_pid") or state.get("ray_actor")
        outcome = self._stop_ray_orphan(state) if state.get("ray_actor") else None
        outcome = outcome or self._stop_orphan(state)
        if self.fresh:
            self._new_run()
            return 0
        self.resumed = True
        self.run_id = str(state["run_id"])
        self._fresh_run = self.run_id if state.get("fresh") else None
        restarts = len(
            [
                e
                for e in self.events.query(kind=ek.TRAIN_RESTARTING, subject=self.name)
                if e.data.get("run_id") == self.run_id
            ]
        )
        self._emit(
            ek.TRAIN_SUPERVISOR_RESUMED,
            restarts_so_far=restarts,
            orphan_pid=orphan,
            orphan_stopped=outcome in ("stopped", "killed"),
            orphan=outcome,
            last_step=heartbeat_progress(self.heartbeat_path),
        )
        return restarts

    def _new_run(self) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.resumed = False
        self._fresh_run = self.run_id if self.fresh else None

    def _stop_orphan(self, state: Mapping[str, Any]) -> str | None:
        """Stop the dead supervisor's worker if it still runs: SIGTERM (+SIGCONT, for a
        stopped one), ``grace_s``, SIGKILL. Returns what was found: None (no worker was
        recorded), ``exited`` (not running any more), ``not_ours`` (its pid is another
        process's now: left alone), ``stopped`` (ended within the grace period) or
        ``killed``."""
        pid = state.get("child_pid")
        if not isinstance(pid, int) or pid <= 0:
            return None
        if not pid_alive(pid):
            return "exited"
        if not self._is_our_worker(pid, state):
            return "not_ours"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            os.killpg(pid, signal.SIGCONT)  # a stopped orphan cannot act on SIGTERM
        if self._wait_gone(pid, self.grace_s):
            return "stopped"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self._wait_gone(pid, 5.0)
        return "killed"

    def _stop_ray_orphan(self, state: Mapping[str, Any]) -> str | None:
        """Stop the dead driver's workers on the Ray cluster (found by the run's actor
        name, not a pid): SIGTERM, grace, SIGKILL, as ``_stop_orphan``."""
        slot = next(
            (
                s
                for s in self.picker.slots
                if isinstance(s, RaySlot) and s.name == state.get("slot")
            ),
            next((s for s in self.picker.slots if isinstance(s, RaySlot)), None),
        )
        if slot is None:
            return None
        slot.preflight()
        stopped = stop_orphans(run_name(self.name, self.state_dir), self.grace_s)
        outcomes = [o for _name, o in stopped]
        for worse in ("killed", "stopped", "exited", "gone"):
            if worse in outcomes:
                return worse
        return "exited"

    def _is_our_worker(self, pid: int, state: Mapping[str, Any]) -> bool:
        """Whether ``pid`` is still the worker the state file names, not a process that
        got its number after it died: the same start time, or (a state file without one)
        this job's run id in its environment."""
        import psutil

        try:
            proc = psutil.Process(pid)
            created = state.get("child_created")
            if isinstance(created, int | float):
                return abs(proc.create_time() - float(created)) < 0.05
            env = proc.environ()
        except psutil.Error:
            return False
        return env.get(ENV_JOB) == self.name and env.get(ENV_RUN_ID) == state.get("run_id")

    @staticmethod
    def _wait_gone(pid: int, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while pid_alive(pid):
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)  # polling an unrelated pid: nothing to wait on but time
        return True

    # -- the supervised process ----------------------------------------------------------
    def _take_move(self) -> None:
        """A move asked for by ``request_move``: the named slot, or the next one."""
        self._move_requested = False
        try:
            wanted = json.loads(self.move_path.read_text()).get("slot")
        except (OSError, ValueError):
            wanted = None
        with contextlib.suppress(FileNotFoundError):
            self.move_path.unlink()
        names = [s.name for s in self.picker.slots]
        if isinstance(wanted, str) and wanted in names:
            self.picker.index = names.index(wanted)
        else:
            self.picker.index = (self.picker.index + 1) % len(names)

    def _spec(self, attempt: int) -> ProcessSpec:
        if self._move_requested:
            self._take_move()
        slot, failed = self.picker.pick()
        for name, why in failed:
            self._emit(ek.TRAIN_SLOT_FAILED, slot=name, reason=why)
        if self._slot is not None and slot.name != self._slot.name:
            self._emit(ek.TRAIN_FAILOVER, from_slot=self._slot.name, to_slot=slot.name)
        self._slot = slot
        env = {
            **self.env,
            **slot.env(),
            ENV_JOB: self.name,
            ENV_RUN_ID: self.run_id,
            # absolute: the worker's working directory is the job's, not ours
            ENV_STATE_DIR: str(self.state_dir.resolve()),
        }
        if self.manifest_path is not None:
            env[ENV_MANIFEST] = str(Path(self.manifest_path).resolve())
        if self._fresh_run is not None:
            env[ENV_FRESH_RUN] = self._fresh_run
        env.update(self._token_env)
        return ProcessSpec(
            argv=self.command,
            cwd=self.workdir,
            env=env,
            name=self.name,
            log_path=self.log_path,
        )

    def _launch(
        self, spec: ProcessSpec, heartbeat_path: Path | None, env: Mapping[str, str]
    ) -> Child | None:
        """The current slot starts the worker (a Ray slot: on a node), or None: here."""
        return self._slot.launch(spec, heartbeat_path, env) if self._slot is not None else None

    def _on_event(self, kind: str, at_ns: int | None, data: dict[str, Any]) -> None:
        data = dict(data)
        if self._slot is not None:
            data.setdefault("slot", self._slot.name)
        if kind == "started" and data.get("backend") == "ray":
            # the pid is on another node: the actor's name is what a new driver finds
            self._write_state(
                child_pid=None,
                child_created=None,
                ray_actor=data.get("actor"),
                ray_node=data.get("node"),
                slot=data.get("slot"),
            )
            self._emit(ek.TRAIN_STARTED, at_ns=at_ns, **data)
            if data.get("attempt", 1) > 1:
                self._emit(ek.TRAIN_RESTARTED, at_ns=at_ns, **data)
            return
        if kind == "started":
            pid = data.get("pid")
            self._write_state(
                child_pid=pid, child_created=_created(pid), slot=data.get("slot"), ray_actor=None
            )
            self._emit(ek.TRAIN_STARTED, at_ns=at_ns, **data)
            if data.get("attempt", 1) > 1:
                self._emit(ek.TRAIN_RESTARTED, at_ns=at_ns, **data)
            return
        if kind == "exited":
            data["last_step"] = heartbeat_progress(self.heartbeat_path)
            child = self.supervisor.child if self.supervisor is not None else None
            if isinstance(child, RayChild):
                data.update(node=child.node, lost=child.lost)
                if child.lost is not None:
                    self._emit(
                        ek.TRAIN_NODE_LOST,
                        at_ns=child.lost_ns,
                        slot=data.get("slot"),
                        node=child.node,
                        node_ip=child.node_ip,
                        actor=child.actor_name,
                        reason=child.lost,
                        last_step=data["last_step"],
                    )
            self._write_state(child_pid=None, ray_actor=None, last_exit=data)
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
        politely (it writes an emergency checkpoint) and end supervision
        (``JobResult.stop_signal``). A job that already finished is not run again
        (``JobResult.already_finished``; see the module)."""
        self.check()
        finished = self.finished_run()
        if finished is not None:
            return JobResult(
                self.name,
                finished,
                "succeeded",
                0,
                f"already finished: run {finished} succeeded with this command; "
                "fresh=True trains it again from step 0",
                0,
                already_finished=True,
            )
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
            launch=self._launch,
        )
        sup.restarts = preloaded
        self.supervisor = sup
        self._write_state(
            run_id=self.run_id,
            status="running",
            reason="",
            supervisor_pid=os.getpid(),
            command=self.command,
            config=self._config_digest(),
            fresh=self._fresh_run is not None,
        )
        if not self.resumed:
            self._emit(
                ek.TRAIN_RUN_STARTED,
                command=self.command,
                slots=[s.describe() for s in self.picker.slots],
                max_restarts=self.max_restarts,
                heartbeat_timeout_s=self.heartbeat_timeout_s,
                fresh=self._fresh_run is not None,
            )
        tokens = self._job_tokens()
        previous: dict[signal.Signals, Any] = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
            previous[MOVE_SIGNAL] = signal.signal(MOVE_SIGNAL, self._on_move)
        try:
            outcome = sup.run()
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="error", reason=str(exc))
            self._write_state(status="failed", reason=str(exc), child_pid=None)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if tokens is not None:
                tokens.stop()
        self._write_state(status=outcome.state, reason=outcome.reason)
        code = outcome.last_exit.code if outcome.last_exit else None
        return JobResult(
            self.name,
            self.run_id,
            outcome.state,
            outcome.restarts,
            outcome.reason,
            code,
            stop_signal=self._stop_signal if outcome.state == "stopped" else None,
        )

    def _on_move(self, _signum: int, _frame: FrameType | None) -> None:
        # request_move wrote move.json first; the slot is chosen when the worker restarts
        self._move_requested = True
        if self.supervisor is not None:
            self.supervisor.request_restart("moved to another slot by request")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        if self.supervisor is not None:
            self.supervisor.request_stop()

    def check(self) -> None:
        """Refuse a job that cannot start: a Ray slot needs ray and a cluster that answers;
        a manifest job's checkpoints need a vault that
        can sign (``UsageError`` naming the fix, exit 2, and a ``train.failed`` event).
        Without this the job would fail at its first checkpoint; ``run()`` checks first."""
        try:
            for slot in self.picker.slots:
                slot.preflight()
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="config", reason=str(exc))
            raise
        if self._manifest is None:
            return
        try:
            if self._vault_server() is not None:
                if not self.segment:
                    raise UsageError(
                        f"job {self.name!r}: vault.server is set, and its tokens are per "
                        "segment; give the job a segment: (one of segments:)"
                    )
                return  # the worker holds a token, never the key (see _job_tokens)
            require_signing_key(self._manifest, who=self.name)
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="config", reason=str(exc))
            raise

    def _vault_server(self) -> str | None:
        vault = self._manifest.vault if self._manifest is not None else None
        return vault.server if vault is not None else None

    def _job_tokens(self) -> Any:
        """With a vault server: mint the worker's first token and refresh it while the
        job runs (``bastion.segment.JobTokens``: why a file, not the environment)."""
        url = self._vault_server()
        if url is None or self._manifest is None:
            return None
        from bastion.segment import JobTokens

        assert self._manifest.vault is not None
        tokens = JobTokens(
            self._manifest,
            self.name,
            self.segment,
            url=url,
            ttl_s=self._manifest.vault.token_ttl_s,
        )
        try:
            self._token_env = tokens.start()
        except BastionError as exc:
            self._emit(ek.TRAIN_FAILED, cause="config", reason=str(exc))
            raise
        return tokens

    def statistics(self) -> JobStatistics:
        return JobStatistics(
            job=self.name,
            run_id=self.run_id,
            slot=self._slot.name if self._slot else None,
            slot_failures=dict(self.picker.failures),
            supervisor=self.supervisor.statistics() if self.supervisor else None,
        )


MOVE_FILE = "move.json"
MOVE_SIGNAL = signal.SIGUSR1


def request_move(state_dir: Path, job: str, *, slot: str | None = None) -> int:
    """Ask the running ``bastion train run`` of ``job`` to restart its worker on ``slot``
    (None: the next slot in the job's order): the worker is stopped politely (SIGTERM: it
    writes its emergency checkpoint), then started on that slot at once, without spending
    the restart budget. Returns the supervisor's pid; ``UnavailableError`` when no
    supervisor of the job is running."""
    from bastion.errors import UnavailableError
    from bastion.supervise import pid_alive

    check_job_name(job)
    where = Path(state_dir) / "train" / job
    try:
        state = json.loads((where / "supervisor.json").read_text())
    except (OSError, ValueError):
        state = {}
    pid = state.get("supervisor_pid")
    if state.get("status") != "running" or not isinstance(pid, int) or not pid_alive(pid):
        raise UnavailableError(
            f"job {job}: no bastion train run supervises it now (nothing in {where}); "
            "start it with bastion train run"
        )
    tmp = where / f".{MOVE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"slot": slot, "asked": time.time()}, out)
    tmp.replace(where / MOVE_FILE)
    os.kill(pid, MOVE_SIGNAL)
    return pid


def _created(pid: Any) -> float | None:
    """A process's start time (to tell it from a later process with its pid)."""
    if not isinstance(pid, int):
        return None
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None

"""Demo scene: the example training job SIGKILLed twice mid-run (once during a checkpoint
write), resumed by the supervisor, and shown to end with the same weights as an
uninterrupted run.

Every kill is aimed by state, never by time, so a slow or busy machine changes how long
the scene takes, not what it shows: the scene watches the worker's heartbeat (its step,
and ``saving=<step>`` while a checkpoint is being written), freezes the worker with
SIGSTOP at the moment it wants, checks in the vault that the checkpoint really is not
written yet, keeps it frozen until the supervisor's warm standby has finished its
imports (as it would have between two real crashes), and only then sends SIGKILL. A
frozen worker cannot run on to the end of the job, so both kills land during training.

Must never: leave a worker frozen (every hold ends in SIGKILL or SIGCONT), or claim a
kill landed during a checkpoint write the vault had already published.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene
    from bastion.events import EventLog
    from bastion.train import JobResult, JobSupervisor, VaultStore

TITLE = "Training: killed twice mid-run, resumed bit-exact"
JOB = "train-digits"
STEPS = 1500
STEP_MS = "3"  # the example pads each step to 3 ms: a stand-in for a bigger model
FIRST_KILL_FROM = 250  # the first kill: the first checkpoint write after this step
LAST_WRITE_TRY = 900  # ... or, had every write finished before the freeze, here
SECOND_KILL_AFTER = 200  # the second kill: this many steps after the first resume
WAIT_S = 300.0  # a bound on each wait for a state, for a stuck run; never reached normally

T = TypeVar("T")


def _keys(workdir: Path) -> None:
    """What a user runs on a fresh copy: ``bastion init`` makes the vault's keys."""
    from bastion.starter import init

    init(workdir)


def _reference(workdir: Path) -> str:
    """The final state hash of one uninterrupted run, in a throw-away copy."""
    with tempfile.TemporaryDirectory(prefix="bastion-ref-") as tmp:
        ref = Path(tmp) / "digits"
        shutil.copytree(workdir, ref, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
        _keys(ref)
        out = ref / "hash"
        subprocess.run(
            [sys.executable, "train.py", "--steps", str(STEPS), "--hash-out", str(out)],
            cwd=ref,
            check=True,
            capture_output=True,
            timeout=WAIT_S,
        )
        return out.read_text()


def _wait(cond: Callable[[], T | None], timeout: float = WAIT_S, poll: float = 0.002) -> T | None:
    """Poll ``cond`` until it returns something truthy (or ``timeout`` passes): every
    state the scene waits for is in a file or a process another process writes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    return None


@dataclass
class _Kill:
    step: int
    """The worker's last step when it was frozen (and then killed)."""
    writing: int | None
    """The step whose checkpoint was being written (not yet in the vault), if any."""
    killed_ns: int
    held_s: float
    """How long the worker stayed frozen, waiting for the warm standby."""
    standby_ready: bool


class _Aim:
    """Freezes the supervised worker at a chosen state and kills it there."""

    def __init__(
        self, sup: JobSupervisor, store: VaultStore, log: EventLog, results: list[JobResult]
    ) -> None:
        self.sup = sup
        self.store = store
        self.log = log
        self.results = results
        self.held: int | None = None
        # Held longer than this, the supervisor would call the worker hung (no heartbeat).
        limit = sup.heartbeat_timeout_s or 30.0
        self.hold_limit_s = max(1.0, 0.8 * limit)

    def worker(self) -> int | None:
        s = self.sup.supervisor
        if self.results or s is None or s.child is None or s.child.exit is not None:
            return None
        if s.child.is_standby:
            return None
        return s.child.pid

    def progress(self) -> tuple[int, str]:
        from bastion.supervise import heartbeat_note, heartbeat_progress

        return heartbeat_progress(self.sup.heartbeat_path) or 0, heartbeat_note(
            self.sup.heartbeat_path
        )

    def freeze(self, pid: int) -> bool:
        """SIGSTOP ``pid`` and wait until it is stopped, so its heartbeat is final."""
        import psutil

        os.kill(pid, signal.SIGSTOP)
        self.held = pid

        def stopped() -> bool:
            try:
                return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
            except psutil.NoSuchProcess:
                return True

        return bool(_wait(stopped, timeout=10.0, poll=0.0005))

    def thaw(self) -> None:
        if self.held is not None:
            pid, self.held = self.held, None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def published(self, step: int) -> bool:
        from bastion.train import checkpoint_name

        return checkpoint_name(JOB, step) in self.store.checkpoints(JOB)

    def during_write(self, from_step: int, give_up_at: int) -> tuple[int, int | None] | None:
        """Freeze the worker while the checkpoint of a step past ``from_step`` is being
        written (not yet published); past ``give_up_at`` with every write already done by
        the time the freeze landed, freeze it where it is. Returns (pid, writing)."""
        after = from_step
        while True:
            found = _wait(functools.partial(self._saving_after, after, give_up_at), poll=0.0005)
            if found is None:
                return None
            pid, writing = found
            if not self.freeze(pid) or self.progress()[0] >= STEPS:
                self.thaw()
                return None
            if writing is None or not self.published(writing):
                return pid, writing
            # the write landed between the last heartbeat and the freeze: the next one
            after = writing
            self.thaw()

    def _saving_after(self, after: int, give_up_at: int) -> tuple[int, int | None] | None:
        pid = self.worker()
        if pid is None:
            return None
        progress, note = self.progress()
        if progress >= give_up_at:
            return pid, None
        if progress > after and note.startswith("saving="):
            writing = int(note.split("=", 1)[1])
            if writing > after:
                return pid, writing
        return None

    def at_step(self, step: int) -> int | None:
        """Freeze the worker once it has reached ``step`` (and not the end)."""
        pid = _wait(lambda: self.worker() if self.progress()[0] >= step else None)
        if pid is None or not self.freeze(pid):
            return None
        if self.progress()[0] >= STEPS:
            self.thaw()
            return None
        return pid

    def kill(self, pid: int, writing: int | None) -> _Kill:
        """Keep ``pid`` frozen until the standby is ready (bounded), then SIGKILL it."""
        from bastion.drill.faults import KillProcess, Scope

        began = time.monotonic()

        def ready() -> bool:
            s = self.sup.supervisor
            return bool(s is not None and s.standby is not None and s.standby.standby_ready())

        standby = bool(_wait(ready, timeout=self.hold_limit_s, poll=0.01))
        step, _ = self.progress()
        held_s = time.monotonic() - began
        killed_ns = time.monotonic_ns()
        KillProcess(pid, scope=Scope.of(pids=[pid]), events=self.log, subject=JOB).inject()
        self.held = None
        return _Kill(step, writing, killed_ns, held_s, standby)

    def restored_after(self, event_id: int, pid: int) -> int | None:
        """The step the worker started after killing ``pid`` resumed from."""
        from bastion import event_kinds as ek

        def restored() -> int | None:
            if self.results:
                return None
            found = self.log.query(kind=ek.TRAIN_RESTORED, subject=JOB, after_id=event_id)
            if found and self.worker() not in (None, pid):
                return int(found[-1].data.get("step") or 0) + 1  # +1: step 0 is truthy
            return None

        value = _wait(restored, poll=0.01)
        return None if value is None else value - 1


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene
    from bastion.train import JobSupervisor, VaultStore, job_status, recovery_timeline
    from bastion.vault import Vault

    scene = Scene(TITLE)
    _keys(ctx.workdir)
    reference = _reference(ctx.workdir)
    scene.findings.append(f"uninterrupted reference run: {STEPS} steps, state {reference[:16]}")

    manifest = ctx.manifest()
    hash_out = ctx.workdir / ".bastion" / "final-hash"
    log = ctx.events()
    mark = log.count()
    # the job as the manifest declares it (restart policy, heartbeat, warm standby), run
    # for longer with padded steps, and a heartbeat on every step so kills can be aimed
    sup = JobSupervisor.from_manifest(manifest, JOB, events=log)
    sup.command = [sys.executable, "train.py", "--steps", str(STEPS), "--step-ms", STEP_MS]
    sup.command += ["--hash-out", str(hash_out)]
    sup.env["BASTION_HEARTBEAT_MIN_INTERVAL_S"] = "0"
    results: list[JobResult] = []
    thread = threading.Thread(target=lambda: results.append(sup.run(handle_signals=False)))
    thread.start()
    aim = _Aim(sup, VaultStore(Vault.from_manifest(manifest)), log, results)

    kills: list[_Kill] = []
    try:
        first = aim.during_write(FIRST_KILL_FROM, LAST_WRITE_TRY)
        if first is None:
            scene.findings.append(f"the worker could not be frozen before step {STEPS}")
        else:
            pid, writing = first
            before = log.count()
            kills.append(aim.kill(pid, writing))
            resumed = aim.restored_after(before, pid)
            second = None if resumed is None else aim.at_step(resumed + SECOND_KILL_AFTER)
            if second is None:
                scene.findings.append("the restarted worker could not be frozen for a second kill")
            else:
                kills.append(aim.kill(second, None))
    finally:
        aim.thaw()
        if len(kills) < 2 and sup.supervisor is not None:
            sup.supervisor.request_stop()
        thread.join(WAIT_S)
    result = results[0] if results else None
    if result is None or not result.ok:
        scene.findings.append(f"the supervised run did not finish: {result}")
        scene.ok = False
        return scene
    timeline = recovery_timeline(log, JOB, after_id=mark)
    for kill, rec in zip(kills, timeline, strict=False):
        parts = {
            "detect": (rec.exited_ns - kill.killed_ns) / 1e9,
            "restart": (rec.started_ns - rec.exited_ns) / 1e9,
            "restore": (rec.restored_ns - rec.started_ns) / 1e9,
            "first step": (rec.first_step_ns - rec.restored_ns) / 1e9,
        }
        where = (
            f" during the checkpoint write of step {kill.writing}"
            if kill.writing is not None
            else ""
        )
        scene.findings.append(
            f"SIGKILL at step {kill.step}{where}: resumed from step {rec.step}; kill -> first "
            f"step {(rec.first_step_ns - kill.killed_ns) / 1e9:.2f} s (detect "
            f"{parts['detect']:.3f}, restart {parts['restart']:.2f}, restore "
            f"{parts['restore']:.2f}, first step {parts['first step']:.3f}; "
            f"{'warm standby' if rec.warm else 'cold start'})"
        )
    waited = [k.held_s for k in kills if k.standby_ready]
    if waited:
        scene.findings.append(
            "before each kill the worker was frozen (SIGSTOP) at that moment until the "
            f"supervisor's standby interpreter was ready ({', '.join(f'{s:.1f}' for s in waited)}"
            " s), as it is between two real crashes"
        )
    status = job_status(manifest.state_dir, log, JOB)
    final = hash_out.read_text() if hash_out.exists() else ""
    same = final == reference
    scene.findings.append(
        f"supervised run: {status.restarts} restarts, {status.checkpoints} verified "
        f"checkpoints in the vault, {status.steps_lost} steps recomputed after the kills"
    )
    scene.findings.append(
        f"final state {final[:16]} {'==' if same else '!='} reference {reference[:16]}: "
        + ("bit-exact resume" if same else "NOT bit-exact")
    )
    scene.findings.append("model stored as model/digits with lineage (dataset, code, config, run)")
    recovered = len(timeline) == 2 and all(
        rec.step is not None and rec.step < STEPS for rec in timeline
    )
    if not recovered:
        scene.findings.append(
            f"expected two recoveries from a step before {STEPS}, got "
            f"{[rec.step for rec in timeline]}"
        )
    scene.ok = same and len(kills) == 2 and recovered
    return scene

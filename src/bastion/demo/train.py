"""Demo scene: the example training job SIGKILLed twice mid-run (once during a checkpoint
write), resumed by the supervisor, and shown to end with the same weights as an
uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "Training: killed twice mid-run, resumed bit-exact"
JOB = "train-digits"
STEPS = 1500
STEP_MS = "3"  # the example pads each step to 3 ms: a stand-in for a bigger model


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
            timeout=300,
        )
        return out.read_text()


def _wait(cond: Any, timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.002)
    return None


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene
    from bastion.drill.faults import KillProcess, Scope
    from bastion.supervise import Backoff, heartbeat_note, heartbeat_progress
    from bastion.train import JobSupervisor, job_status, recovery_timeline

    scene = Scene(TITLE)
    _keys(ctx.workdir)
    reference = _reference(ctx.workdir)
    scene.findings.append(f"uninterrupted reference run: {STEPS} steps, state {reference[:16]}")

    manifest = ctx.manifest()
    job = manifest.jobs[JOB]
    hash_out = ctx.workdir / ".bastion" / "final-hash"
    log = ctx.events()
    mark = log.count()
    sup = JobSupervisor(
        JOB,
        [
            "python",
            "train.py",
            "--steps",
            str(STEPS),
            "--step-ms",
            STEP_MS,
            "--hash-out",
            str(hash_out),
        ],
        state_dir=manifest.state_dir,
        events=log,
        workdir=ctx.workdir,
        env={"BASTION_HEARTBEAT_MIN_INTERVAL_S": "0"},  # so the kills can be aimed
        segment=job.segment or "",
        max_restarts=job.restart.max,
        backoff=Backoff(initial=job.restart.backoff_s, cap=job.restart.backoff_max_s),
        heartbeat_timeout_s=job.heartbeat_timeout_s,
        grace_s=job.grace_s,
        manifest_path=ctx.manifest_path,
    )
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(sup.run(handle_signals=False)))
    thread.start()

    def moment(step: int, *, saving: bool) -> int | None:
        s = sup.supervisor
        if s is None or s.child is None or s.child.exit is not None:
            return None
        # Prefer a moment when the standby interpreter is warm (as between real
        # crashes); on a very busy machine, go ahead without it 500 steps later.
        ready = s.standby is not None and s.standby.standby_ready()
        progress = heartbeat_progress(sup.heartbeat_path) or 0
        note = heartbeat_note(sup.heartbeat_path)
        aimed = not saving or note.startswith("saving=")
        if (ready or progress >= step + 500) and progress >= step and aimed:
            return s.child.pid
        return None

    kills = []
    target = 250
    for saving in (True, False):
        step = target
        pid = _wait(lambda step=step, saving=saving: moment(step, saving=saving) or bool(results))
        if pid is True:
            pid = None
        if pid is None:
            scene.findings.append(f"could not reach step {step} to inject the kill")
            scene.ok = False
            break
        note = heartbeat_note(sup.heartbeat_path)
        killed_ns = time.monotonic_ns()
        KillProcess(pid, scope=Scope.of(pids=[pid]), events=log, subject=JOB).inject()
        at = heartbeat_progress(sup.heartbeat_path) or step
        kills.append((at, note, killed_ns))
        target = at + 600  # the next kill: well after the restart
        _wait(
            lambda pid=pid: (
                results
                or (sup.supervisor and sup.supervisor.child and sup.supervisor.child.pid != pid)
            )
        )
    thread.join(300)
    result = results[0] if results else None
    if result is None or not result.ok:
        scene.findings.append(f"the supervised run did not finish: {result}")
        scene.ok = False
        return scene
    timeline = recovery_timeline(log, JOB, after_id=mark)
    for (at, note, killed_ns), rec in zip(kills, timeline, strict=False):
        parts = {
            "detect": (rec.exited_ns - killed_ns) / 1e9,
            "restart": (rec.started_ns - rec.exited_ns) / 1e9,
            "restore": (rec.restored_ns - rec.started_ns) / 1e9,
            "first step": (rec.first_step_ns - rec.restored_ns) / 1e9,
        }
        where = f" during the checkpoint write of step {note.split('=')[1]}" if note else ""
        scene.findings.append(
            f"SIGKILL at step {at}{where}: resumed from step {rec.step}; kill -> first "
            f"step {(rec.first_step_ns - killed_ns) / 1e9:.2f} s (detect "
            f"{parts['detect']:.3f}, restart {parts['restart']:.2f}, restore "
            f"{parts['restore']:.2f}, first step {parts['first step']:.3f}; "
            f"{'warm standby' if rec.warm else 'cold start'})"
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
    scene.ok = same and len(kills) == 2
    return scene

"""Training under real faults: SIGKILL (also during a checkpoint write), SIGTERM
preemption, SIGSTOP hang, and checkpoints damaged on one or every vault replica.

Each supervised run is compared with one uninterrupted run of the same example: the
final hash of weights and optimizer state must be identical (bit-exact resume). Faults
come from ``bastion.drill.faults``; kill moments from the ``rng`` fixture (seed printed).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bastion.drill.faults import FlipBytes, HangProcess, KillProcess, Scope
from bastion.events import EventLog
from bastion.manifest import load
from bastion.supervise import Backoff, heartbeat_note, heartbeat_progress
from bastion.train import (
    Checkpointer,
    JobResult,
    JobSupervisor,
    VaultStore,
    job_status,
    recovery_timeline,
)
from bastion.vault import Vault, make_key
from tests.conftest import EXAMPLE

STEPS = 400
JOB = "train-digits"


def _prepare(target: Path) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    return target


def _wait_for(cond: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.001)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final state hash of one uninterrupted run."""
    work = _prepare(tmp_path_factory.mktemp("baseline") / "digits")
    out = work / "hash"
    subprocess.run(
        [sys.executable, "train.py", "--steps", str(STEPS), "--hash-out", str(out)],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.read_text()


class Run:
    """The example under a JobSupervisor in a thread; the test thread injects faults."""

    def __init__(self, work: Path, *, seed: int, heartbeat_timeout_s: float = 60.0) -> None:
        self.work = work
        self.manifest = load(work / "bastion.yaml")
        self.events = EventLog.in_state_dir(self.manifest.state_dir)
        self.hash_out = work / "final-hash"
        self.sup = JobSupervisor(
            JOB,
            # 2 ms steps: long enough for each fault to land at the step it aims at
            [
                *(sys.executable, "train.py", "--steps", str(STEPS), "--step-ms", "2"),
                *("--hash-out", str(self.hash_out)),
            ],
            state_dir=self.manifest.state_dir,
            events=self.events,
            workdir=work,
            # every step writes its progress, so a fault can be aimed at an exact moment
            env={"BASTION_HEARTBEAT_MIN_INTERVAL_S": "0"},
            segment="staging",
            max_restarts=12,
            backoff=Backoff(initial=0.05, cap=0.2, jitter=0.0),
            heartbeat_timeout_s=heartbeat_timeout_s,
            grace_s=10.0,
            manifest_path=work / "bastion.yaml",
            seed=seed,
        )
        self.result: list[JobResult] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(self.sup.run(handle_signals=False)), daemon=True
        )
        self.thread.start()

    def child_at(self, step: int, *, saving: bool = False) -> tuple[int, int, str] | None:
        """(pid, progress, note) once the current child has reached ``step``."""
        sup = self.sup.supervisor
        child = sup.child if sup is not None else None
        if child is None or child.exit is not None or self.result:
            return None
        progress = heartbeat_progress(self.sup.heartbeat_path)
        note = heartbeat_note(self.sup.heartbeat_path)
        if progress is None or progress < step:
            return None
        if saving:
            # aim at the first steps of a save, long before the vault can publish it
            if not note.startswith("saving="):
                return None
            if progress - int(note.split("=")[1]) > 3:
                return None
        return child.pid, progress, note

    def wait_restarted(self, old_pid: int) -> None:
        def fresh() -> bool:
            sup = self.sup.supervisor
            return bool(self.result or (sup and sup.child and sup.child.pid != old_pid))

        _wait_for(fresh)

    def finish(self) -> JobResult:
        self.thread.join(180)
        assert self.result, "the supervisor did not finish"
        return self.result[0]


def _targets(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return sorted(rng.sample(range(lo, hi), n))


def test_bit_exact_resume_under_sigkill(
    baseline: str, tmp_path: Path, seed: int, rng: random.Random
) -> None:
    run = Run(_prepare(tmp_path / "digits"), seed=seed)
    targets = _targets(rng, 5, 20, 340)
    mid_write = set(rng.sample(range(3), 2))  # these kills wait for a save just begun
    kills: list[dict[str, Any]] = []
    for i, target in enumerate(targets):
        pid, progress, note = _wait_for(
            lambda t=target, s=i in mid_write: run.child_at(t, saving=s)
        )
        KillProcess(pid, scope=Scope.of(pids=[pid]), events=run.events, subject=JOB).inject()
        kills.append({"pid": pid, "progress": progress, "note": note})
        run.wait_restarted(pid)
    result = run.finish()
    assert result.ok, result
    assert result.restarts == 5
    assert run.hash_out.read_text() == baseline
    restored = [e.data["step"] for e in run.events.query(kind="train.restored", subject=JOB)]
    assert len(restored) == 6
    # A kill during a write: that checkpoint never became visible, the resume used an
    # earlier one (restored step < the step that was being saved).
    during_write = [
        k
        for k, r in zip(kills, restored[1:], strict=True)
        if k["note"].startswith("saving=") and r < int(k["note"].split("=")[1])
    ]
    assert during_write, f"no kill landed inside a checkpoint write: {kills} {restored}"
    status = job_status(run.manifest.state_dir, run.events, JOB)
    assert status.restarts == 5
    assert status.status == "succeeded"


def test_preemption_loses_no_steps(
    baseline: str, tmp_path: Path, seed: int, rng: random.Random
) -> None:
    run = Run(_prepare(tmp_path / "digits"), seed=seed)
    for i, target in enumerate(_targets(rng, 2, 20, 340)):
        pid, _progress, _note = _wait_for(lambda t=target, s=i == 0: run.child_at(t, saving=s))
        KillProcess(
            pid, scope=Scope.of(pids=[pid]), sig=15, events=run.events, subject=JOB
        ).inject()
        run.wait_restarted(pid)
    result = run.finish()
    assert result.ok, result
    assert run.hash_out.read_text() == baseline
    status = job_status(run.manifest.state_dir, run.events, JOB)
    assert status.preemptions == 2
    assert status.steps_lost == 0
    exits = [e.data["last_step"] for e in run.events.query(kind="train.exited", subject=JOB)]
    restored = [e.data["step"] for e in run.events.query(kind="train.restored", subject=JOB)]
    assert exits[:2] == restored[1:], "each resume starts at the step preemption stopped at"


def test_sigstop_hang_is_detected_and_recovered(
    baseline: str, tmp_path: Path, seed: int, rng: random.Random
) -> None:
    run = Run(_prepare(tmp_path / "digits"), seed=seed, heartbeat_timeout_s=3.0)
    pid, _progress, _note = _wait_for(lambda: run.child_at(rng.randint(20, 300)))
    HangProcess(pid, scope=Scope.of(pids=[pid]), events=run.events, subject=JOB).inject()
    run.wait_restarted(pid)
    result = run.finish()
    assert result.ok, result
    hangs = run.events.query(kind="train.hang", subject=JOB)
    assert len(hangs) == 1
    assert hangs[0].data["heartbeat_age_s"] > 3.0
    assert run.hash_out.read_text() == baseline


def _vault_checkpoints(work: Path) -> tuple[Vault, VaultStore, Callable[[], Checkpointer]]:
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    vault = Vault.from_manifest(manifest, events=events)
    store = VaultStore(vault)

    def make() -> Checkpointer:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        ckpt = Checkpointer("corrupt-job", store, events=events, handle_signals=False)
        ckpt.track(model=model)
        return ckpt

    return vault, store, make


def test_corrupt_checkpoint_repaired_or_skipped(tmp_path: Path, seed: int) -> None:
    work = _prepare(tmp_path / "digits")
    vault, _store, make = _vault_checkpoints(work)
    ckpt = make()
    ckpt.save(100, block=True)
    torch.manual_seed(1)
    for p in ckpt._tracked["model"].parameters():  # type: ignore[attr-defined]
        p.data.add_(torch.randn_like(p))
    ckpt.save(200, block=True)
    ckpt.close()
    older = vault.snapshot("ckpt/corrupt-job/step-000100@latest")
    newer = vault.snapshot("ckpt/corrupt-job/step-000200@latest")
    only_new = sorted(newer.chunk_ids() - older.chunk_ids())
    assert only_new
    replicas = [Path(r) for r in vault.stores[0:0]] or [
        Path(r)
        for r in load(work / "bastion.yaml").vault.replicas  # type: ignore[union-attr]
    ]
    objects = [[r / "objects" / c[:2] / c for c in only_new] for r in replicas]
    events = EventLog.in_state_dir(work / ".bastion")

    # one replica damaged: restore still gets step 200, and the vault repairs the copy
    first = events.count()
    FlipBytes(
        objects[0],
        scope=Scope.of(paths=[replicas[0]]),
        count=3,
        seed=seed,
        max_files=len(only_new),
    ).inject()  # not reverted: the vault must repair it
    assert make().restore() == 200
    after = events.query(after_id=first)
    assert any(e.kind == "vault.repaired" for e in after)

    # every replica damaged: restore falls back to step 100 and says why
    for reps in objects:
        for path in reps:
            path.chmod(0o644)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
    mark = events.count()
    again = make()
    assert again.restore() == 100
    kinds = [e.kind for e in events.query(after_id=mark)]
    assert "train.checkpoint.corrupt" in kinds
    again.close()


def test_many_kills_spread_over_a_long_run_neither_slow_recovery_nor_fail_the_job(
    baseline: str, tmp_path: Path, seed: int
) -> None:
    # Kills spread over one long run, each after the worker ran healthy_after_s and saved
    # a checkpoint of its own: more kills than the restart budget allows in a row. Each
    # restart must cost what the first did (backoff reset) and the job must succeed.
    work = _prepare(tmp_path / "digits")
    manifest_text = (work / "bastion.yaml").read_text()
    manifest_text = manifest_text.replace(
        "restart: {max: 10, backoff_s: 0.2}",
        "restart: {max: 2, backoff_s: 0.2, backoff_max_s: 30, healthy_after_s: 0.5}\n"
        "    warm_standby: false",
    )
    assert "healthy_after_s: 0.5" in manifest_text
    (work / "bastion.yaml").write_text(manifest_text)
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    hash_out = work / "final-hash"
    sup = JobSupervisor.from_manifest(manifest, JOB, events=events)
    sup.command = [sys.executable, "train.py", "--steps", str(STEPS), "--step-ms", "10"]
    sup.command += ["--hash-out", str(hash_out)]
    sup.rng = random.Random(seed)
    results: list[JobResult] = []
    thread = threading.Thread(
        target=lambda: results.append(sup.run(handle_signals=False)), daemon=True
    )
    thread.start()
    kills = 5

    def healthy_with_a_checkpoint(after_id: int) -> int | None:
        s = sup.supervisor
        child = s.child if s is not None else None
        if results or child is None or child.exit is not None:
            return None
        if child.statistics().uptime_s <= 0.5 + 0.1:
            return None
        restored = events.query(kind="train.restored", subject=JOB, after_id=after_id)
        if not restored:
            return None
        saved = events.query(kind="train.checkpoint.saved", subject=JOB, after_id=restored[-1].id)
        return child.pid if saved else None

    mark = events.count()
    after = mark
    for _ in range(kills):
        pid = _wait_for(lambda a=after: results or healthy_with_a_checkpoint(a), timeout=120)
        assert not results, f"the job ended before all {kills} kills: {results[0]}"
        after = events.count()
        KillProcess(pid, scope=Scope.of(pids=[pid]), events=events, subject=JOB).inject()
    thread.join(180)
    assert results, "the supervisor did not finish"
    assert results[0].ok, results[0]
    assert results[0].restarts == kills
    restarting = events.query(kind="train.restarting", subject=JOB, after_id=mark)
    assert len(restarting) == kills
    # every restart is a first restart again: streak 1, the initial backoff (with jitter)
    assert [e.data["streak"] for e in restarting] == [1] * kills
    assert all(e.data["reset"] for e in restarting)
    assert all(e.data["delay_s"] <= 0.2 for e in restarting), restarting
    timeline = recovery_timeline(events, JOB, after_id=mark)
    assert len(timeline) == kills
    restarts_s = [(r.started_ns - r.exited_ns) / 1e9 for r in timeline]
    assert max(restarts_s) < 0.2 + 0.5, restarts_s  # the policy's part of recovery stays flat
    assert hash_out.read_text() == baseline

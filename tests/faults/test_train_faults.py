"""Training under real faults: SIGKILL (also during a checkpoint write), SIGTERM
preemption, and checkpoints damaged on one or every vault replica. The SIGSTOP hang and
the many kills spread over a long run are in ``test_train_faults_restarts.py`` (split so
both xdist workers share the slow runs; the shared parts are in ``tests/train_faults.py``).

Each supervised run is compared with one uninterrupted run of the same example: the
final hash of weights and optimizer state must be identical (bit-exact resume). Faults
come from ``bastion.drill.faults``; kill moments from the ``rng`` fixture (seed printed).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion.drill.faults import FlipBytes, KillProcess, Scope
from bastion.events import EventLog
from bastion.manifest import load
from bastion.train import Checkpointer, VaultStore, job_status
from bastion.vault import Vault
from tests.train_faults import JOB, Run, baseline, kill_steps, prepare, wait_step

__all__ = ["baseline"]  # the module fixture, imported so this module has its own


def test_bit_exact_resume_under_sigkill(
    baseline: str, tmp_path: Path, seed: int, rng: random.Random
) -> None:
    run = Run(prepare(tmp_path / "digits"), seed=seed)
    targets = kill_steps(rng, 5, 20, 340)
    mid_write = set(rng.sample(range(3), 2))  # these kills wait for a save just begun
    kills: list[dict[str, Any]] = []
    for i, target in enumerate(targets):
        pid, progress, note = wait_step(
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
    run = Run(prepare(tmp_path / "digits"), seed=seed)
    for i, target in enumerate(kill_steps(rng, 2, 20, 340)):
        pid, _progress, _note = wait_step(lambda t=target, s=i == 0: run.child_at(t, saving=s))
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
    work = prepare(tmp_path / "digits")
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

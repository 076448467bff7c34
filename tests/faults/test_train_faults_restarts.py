"""Training under real faults, the restart half: a SIGSTOP hang, and many kills spread
over one long run (more than the restart budget allows in a row). Split from
``test_train_faults.py`` so both xdist workers share the slow runs; the shared parts
are in ``tests/train_faults.py``.

Each supervised run is compared with one uninterrupted run of the same example: the
final hash of weights and optimizer state must be identical (bit-exact resume). Faults
come from ``bastion.drill.faults``; kill moments from the ``rng`` fixture (seed printed).
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

from bastion.drill.faults import HangProcess, KillProcess, Scope
from bastion.events import EventLog
from bastion.manifest import load
from bastion.train import JobResult, JobSupervisor, recovery_timeline
from tests.helpers import wait_for
from tests.train_faults import JOB, STEPS, Run, baseline, prepare, wait_step

__all__ = ["baseline"]  # the module fixture, imported so this module has its own


def test_sigstop_hang_is_detected_and_recovered(
    baseline: str, tmp_path: Path, seed: int, rng: random.Random
) -> None:
    run = Run(prepare(tmp_path / "digits"), seed=seed, heartbeat_timeout_s=3.0)
    pid, _progress, _note = wait_step(lambda: run.child_at(rng.randint(20, 300)))
    HangProcess(pid, scope=Scope.of(pids=[pid]), events=run.events, subject=JOB).inject()
    run.wait_restarted(pid)
    result = run.finish()
    assert result.ok, result
    hangs = run.events.query(kind="train.hang", subject=JOB)
    assert len(hangs) == 1
    assert hangs[0].data["heartbeat_age_s"] > 3.0
    assert run.hash_out.read_text() == baseline


def test_many_kills_spread_over_a_long_run_neither_slow_recovery_nor_fail_the_job(
    baseline: str, tmp_path: Path, seed: int
) -> None:
    # Kills spread over one long run, each after the worker ran healthy_after_s and saved
    # a checkpoint of its own: more kills than the restart budget allows in a row. Each
    # restart must cost what the first did (backoff reset) and the job must succeed.
    work = prepare(tmp_path / "digits")
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
        # polled every 20 ms (wait_for), not every 1 ms (wait_step): each poll runs two
        # event-log queries, and a kill here need not land at an exact step, only after
        # the worker has been healthy and saved a checkpoint of its own
        pid = wait_for(
            lambda a=after: results or healthy_with_a_checkpoint(a),
            "a healthy worker with a checkpoint of its own",
            seconds=120,
        )
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

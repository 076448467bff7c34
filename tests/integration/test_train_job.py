"""The job supervisor and ``bastion train`` with real processes: bad input gets a clear
error (missing command, crash every time, checkpoint of another shape), worker-slot
failover, and a supervisor that is itself killed and started again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bastion.drill.faults import HangProcess, KillProcess, Scope
from bastion.events import EventLog
from bastion.supervise import Backoff
from bastion.train import JobSupervisor, LocalSlot, job_status
from bastion.vault import make_key
from tests.conftest import EXAMPLE

BASTION = [sys.executable, "-m", "bastion"]
FAST = Backoff(initial=0.01, cap=0.05, jitter=0.0)


def _wait_for(cond, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout} s")


def _example(target: Path) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    return target


def test_missing_command_exits_2_naming_the_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*BASTION, "train", "run", "--name", "ghost", "--", "/nonexistent/trainer", "--x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "/nonexistent/trainer" in proc.stderr + proc.stdout
    assert "not found" in proc.stderr + proc.stdout
    failed = EventLog.in_state_dir(tmp_path / ".bastion").query(kind="train.failed")
    assert failed
    assert failed[0].subject == "ghost"


def test_crash_at_once_every_time_exhausts_the_budget(tmp_path: Path) -> None:
    log = EventLog.in_state_dir(tmp_path / ".bastion")
    sup = JobSupervisor(
        "crasher",
        ["python", "-c", "import sys; print('boom', file=sys.stderr); sys.exit(1)"],
        state_dir=tmp_path / ".bastion",
        events=log,
        max_restarts=3,
        backoff=FAST,
        heartbeat_timeout_s=None,
        warm_standby=False,
    )
    result = sup.run(handle_signals=False)
    assert result.state == "failed"
    assert result.restarts == 3
    assert "restart budget exhausted after 3 restarts (last: exit:1)" in result.reason
    assert len(log.query(kind="train.started", subject="crasher")) == 4
    assert log.query(kind="train.failed", subject="crasher")[0].data["cause"] == (
        "budget_exhausted"
    )
    assert "boom" in sup.log_path.read_text()
    assert job_status(tmp_path / ".bastion", log, "crasher").status == "failed"


def test_checkpoint_of_another_shape_is_a_clear_error_not_a_restart_loop(
    tmp_path: Path,
) -> None:
    work = _example(tmp_path / "digits")
    # a checkpoint of the example's job, written by a 64-wide model
    import torch
    from torch import nn

    from bastion.manifest import load
    from bastion.train import Checkpointer, ResumableSampler, VaultStore
    from bastion.vault import Vault

    store = VaultStore(Vault.from_manifest(load(work / "bastion.yaml")))
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    ckpt = Checkpointer("train-digits", store, handle_signals=False)
    ckpt.track(
        model=model,
        optimizer=torch.optim.Adam(model.parameters()),
        data=ResumableSampler(1797, 64, seed=0),
    )
    ckpt.save(60, block=True)
    ckpt.close()
    log = EventLog.in_state_dir(work / ".bastion")
    sup = JobSupervisor(
        "train-digits",
        ["python", "train.py", "--steps", "80", "--hidden", "32"],
        state_dir=work / ".bastion",
        events=log,
        workdir=work,
        max_restarts=5,
        backoff=FAST,
        manifest_path=work / "bastion.yaml",
        warm_standby=False,
    )
    result = sup.run(handle_signals=False)
    assert result.state == "failed"
    assert result.exit_code == 2
    assert result.restarts == 0
    text = sup.log_path.read_text()
    assert "ckpt/train-digits/step-000060 does not fit 'model'" in text
    assert "0.weight: checkpoint [64, 64] torch.float32, model [32, 64]" in text


def test_failover_to_another_slot_when_scratch_breaks(tmp_path: Path) -> None:
    good, bad = tmp_path / "scratch-b", tmp_path / "scratch-a"
    script = tmp_path / "job.py"
    script.write_text(
        "import os, pathlib, time\n"
        "scratch = pathlib.Path(os.environ['BASTION_SCRATCH'])\n"
        "(scratch / 'ran').write_text(os.environ['BASTION_SLOT'])\n"
        "if os.environ['BASTION_SLOT'] == 'a':\n"
        "    time.sleep(60)\n"
    )
    log = EventLog.in_state_dir(tmp_path / ".bastion")
    sup = JobSupervisor(
        "slotted",
        ["python", str(script)],
        state_dir=tmp_path / ".bastion",
        events=log,
        max_restarts=3,
        backoff=FAST,
        heartbeat_timeout_s=None,
        slots=[LocalSlot("a", bad), LocalSlot("b", good)],
        warm_standby=False,
    )
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(sup.run(handle_signals=False)))
    thread.start()
    _wait_for((bad / "ran").exists)
    # the slot fails: its scratch directory is gone and a file sits in its place
    shutil.rmtree(bad)
    bad.write_text("not a directory any more")
    assert sup.supervisor is not None
    assert sup.supervisor.child is not None
    pid = sup.supervisor.child.pid
    KillProcess(pid, scope=Scope.of(pids=[pid]), events=log, subject="slotted").inject()
    thread.join(60)
    assert results[0].ok, results
    assert (good / "ran").read_text() == "b"
    slot_failed = log.query(kind="train.slot.failed", subject="slotted")
    assert slot_failed[0].data["slot"] == "a"
    assert "not writable" in slot_failed[0].data["reason"]
    failover = log.query(kind="train.failover", subject="slotted")
    assert (failover[0].data["from_slot"], failover[0].data["to_slot"]) == ("a", "b")


def test_killed_supervisor_is_picked_up_by_the_next_one(tmp_path: Path) -> None:
    # A supervisor SIGKILLed while its job runs: the job outlives it (own session), and
    # here it also hangs. The next supervisor continues the same run: it stops the orphan
    # politely (SIGTERM + SIGCONT: it writes its emergency checkpoint), restarts the job
    # and the run completes with no step lost.
    work = _example(tmp_path / "digits")
    env = {**os.environ, "BASTION_HEARTBEAT_MIN_INTERVAL_S": "0"}
    cmd = [*BASTION, "train", "run", "train-digits", "-f", str(work / "bastion.yaml")]
    first = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL)
    heartbeat = work / ".bastion/train/train-digits/heartbeat"

    def progressed() -> bool:
        assert first.poll() is None, "the first supervisor ended early"
        text = heartbeat.read_text() if heartbeat.exists() else ""
        return text[:20].strip().isdigit() and int(text[:20]) >= 30

    _wait_for(progressed, timeout=120)
    orphan = int(json.loads((heartbeat.parent / "supervisor.json").read_text())["child_pid"])
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # the orphan hangs too, so it is surely mid-run when the next supervisor arrives
    HangProcess(orphan, scope=Scope.of(pids=[orphan])).inject()
    second = subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert second.returncode == 0, second.stderr
    log = EventLog.in_state_dir(work / ".bastion")
    resumed = log.query(kind="train.supervisor.resumed", subject="train-digits")
    assert len(resumed) == 1
    assert resumed[0].data["orphan_stopped"] is True
    runs = {e.data["run_id"] for e in log.query(kind="train.started", subject="train-digits")}
    assert len(runs) == 1, "the second supervisor continued the same run"
    status = job_status(work / ".bastion", log, "train-digits")
    assert status.status == "succeeded"
    assert status.steps_lost == 0
    assert status.preemptions == 1


def test_fresh_copy_is_refused_with_the_fix_and_after_init_trains_into_the_vault(
    example_copy: Path,
) -> None:
    # What a new user does: clone, run the example's job. No keys yet: the job is refused
    # with the command that fixes it (never trained with unsigned checkpoints).
    work = example_copy
    manifest_bytes = (work / "bastion.yaml").read_bytes()
    refused = subprocess.run(
        [*BASTION, "train", "run", "train-digits"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "train-digits: the vault's signing key .bastion/keys/signing.key is missing; run "
        "`bastion init .` to create the missing keys and replica directories"
    ) in refused.stderr
    assert not (work / ".bastion/keys").exists()
    assert not (work / ".bastion/vault").exists(), "a refused job makes nothing"

    init = subprocess.run(
        [*BASTION, "init", "."], cwd=work, capture_output=True, text=True, timeout=60, check=False
    )
    assert init.returncode == 0, init.stderr
    assert "created .bastion/keys/signing.key" in init.stdout
    assert (work / "bastion.yaml").read_bytes() == manifest_bytes

    trained = subprocess.run(
        [*BASTION, "train", "run", "train-digits"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr
    from bastion.manifest import load
    from bastion.vault import Vault

    vault = Vault.from_manifest(load(work / "bastion.yaml"))
    # every checkpoint is a snapshot whose signature the vault verified on the way in
    names = vault.names(prefix="ckpt/train-digits/")
    # every 50 steps, unless one was still being written (on_busy: skip), and the last
    steps = [int(n.removeprefix("ckpt/train-digits/step-")) for n in names]
    assert steps[-1] == 400
    assert len(steps) >= 2
    assert all(s % 50 == 0 for s in steps), names
    for name in names:
        snap = vault.snapshot(name)
        assert snap.meta["job"] == "train-digits"
        assert set(snap.files) == {"state.safetensors", "state.json"}
    model = vault.snapshot("model/digits")
    assert model.meta["job"] == "train-digits"
    assert any(ref.startswith("dataset/digits@") for ref in model.lineage)
    status = subprocess.run(
        [*BASTION, "train", "status", "train-digits", "--json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    row = json.loads(status.stdout)[0]
    assert (row["status"], row["checkpoints"], row["last_checkpoint"]["step"]) == (
        "succeeded",
        len(names),
        400,
    )


@pytest.mark.parametrize("record", ["start time", "no start time"])
def test_a_dead_workers_pid_now_someone_elses_is_left_alone(tmp_path: Path, record: str) -> None:
    # The supervisor and its worker both died; the worker's pid went to an unrelated
    # process (a session leader, so a process-group signal would reach it). The next
    # supervisor must not signal it, and must not report an orphan it stopped.
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        state_dir = tmp_path / ".bastion"
        job_dir = state_dir / "train" / "quick"
        job_dir.mkdir(parents=True)
        state = {"status": "running", "run_id": "r1", "child_pid": stranger.pid}
        if record == "start time":
            # the worker that had this pid started a minute before the stranger did
            state["child_created"] = psutil.Process(stranger.pid).create_time() - 60
        (job_dir / "supervisor.json").write_text(json.dumps(state))
        log = EventLog.in_state_dir(state_dir)
        sup = JobSupervisor(
            "quick",
            ["python", "-c", "pass"],
            state_dir=state_dir,
            events=log,
            backoff=FAST,
            heartbeat_timeout_s=None,
            grace_s=1.0,
            warm_standby=False,
        )
        result = sup.run(handle_signals=False)
        assert result.ok, result
        resumed = log.query(kind="train.supervisor.resumed", subject="quick")
        assert len(resumed) == 1
        assert resumed[0].data["orphan_stopped"] is False
        assert resumed[0].data["orphan"] == "not_ours"
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_dead_workers_exit_is_not_reported_as_an_orphan_stopped(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    gone.wait()
    state_dir = tmp_path / ".bastion"
    (state_dir / "train" / "quick").mkdir(parents=True)
    (state_dir / "train" / "quick" / "supervisor.json").write_text(
        json.dumps({"status": "running", "run_id": "r1", "child_pid": gone.pid})
    )
    log = EventLog.in_state_dir(state_dir)
    sup = JobSupervisor(
        "quick",
        ["python", "-c", "pass"],
        state_dir=state_dir,
        events=log,
        backoff=FAST,
        heartbeat_timeout_s=None,
        warm_standby=False,
    )
    assert sup.run(handle_signals=False).ok
    resumed = log.query(kind="train.supervisor.resumed", subject="quick")[0]
    assert (resumed.data["orphan_stopped"], resumed.data["orphan"]) == (False, "exited")

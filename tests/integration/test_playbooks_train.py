"""The playbook action restart against a real ``bastion train run``: a worker OOM on one
slot triggers a playbook that moves the job to the other slot (SIGTERM to the worker,
started again there at once, no restart budget spent)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.errors import UnavailableError
from bastion.events import EventLog
from bastion.manifest import load
from bastion.playbooks import Runner
from bastion.train import request_move

WORKER = """
import signal, sys, time
from bastion.supervise import Heartbeat
beat = Heartbeat.from_env()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
while True:
    beat.beat()
    time.sleep(0.05)
"""


def test_an_oom_on_one_slot_restarts_the_job_on_the_other(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
system: t
jobs:
  train-x:
    command: [python, worker.py]
    warm_standby: false
    grace_s: 5
    restart: {max: 0}
    slots: [{name: gpu-a}, {name: gpu-b}]
playbooks:
  rules:
    oom:
      on: train.exited
      when: {data.oom: true}
      actions:
        - {do: restart, job: "{subject}", timeout_s: 60}
"""
    )
    bastion = [sys.executable, "-m", "bastion"]
    init = subprocess.run(
        [*bastion, "init", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    manifest = load(tmp_path / "bastion.yaml")
    with EventLog.in_state_dir(manifest.state_dir) as log:
        with pytest.raises(UnavailableError, match="no bastion train run supervises it"):
            request_move(manifest.state_dir, "train-x")
        job = subprocess.Popen(
            [*bastion, "train", "run", "train-x"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while not log.query(kind=ek.TRAIN_STARTED, subject="train-x"):
                assert time.monotonic() < deadline, "the job never started"
                assert job.poll() is None, job.communicate()[1]
                time.sleep(0.05)
            (first,) = log.query(kind=ek.TRAIN_STARTED, subject="train-x")
            assert first.data["slot"] == "gpu-a"
            # the trigger: a worker OOM as the supervisor reports it (the kernel's OOM
            # killer is not ours to call)
            runner = Runner(manifest)
            try:
                (done,) = runner.handle(
                    log.emit(
                        ek.TRAIN_EXITED, "train-x", oom=True, code=None, signal=9, slot="gpu-a"
                    )
                )
                assert done.result(timeout=90) == "resolved"
            finally:
                runner.close()
            second = log.query(kind=ek.TRAIN_STARTED, subject="train-x")[-1]
            assert second.data["slot"] == "gpu-b"
            assert second.data["pid"] != first.data["pid"]
            (moved,) = log.query(kind=ek.TRAIN_FAILOVER)
            assert (moved.data["from_slot"], moved.data["to_slot"]) == ("gpu-a", "gpu-b")
            # restart.max is 0: a restart asked for spends no budget, the job still runs
            assert job.poll() is None
            restarting = log.query(kind=ek.TRAIN_RESTARTING)[-1]
            assert restarting.data["reason"].startswith("requested")
        finally:
            job.terminate()
            job.communicate(timeout=60)


def test_a_requested_restart_spends_no_budget_and_waits_no_backoff() -> None:
    from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor

    sup = Supervisor(
        ProcessSpec(argv=["sleep", "30"], name="s"),
        backoff=Backoff(initial=60.0, cap=60.0),  # a failure would wait a minute
        budget=RestartBudget(max_restarts=0),  # ... and a failure would end it
        grace_s=5,
    )
    sup.start(poll_s=0.01)
    try:
        deadline = time.monotonic() + 30
        while sup.child is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = sup.child.pid
        sup.request_restart("test")
        while sup.child is None or sup.child.pid == first or sup.state != "running":
            assert time.monotonic() < deadline, sup.statistics()
            time.sleep(0.01)
        assert sup.restarts == 1
        assert sup.budget.statistics().used == 0
    finally:
        sup.stop(timeout=30)

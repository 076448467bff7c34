"""A playbook runner SIGKILLed in the middle of an action (a real ``bastion playbook run``
process, a real signal): the restarted runner resolves the cut-off action without
running it again. With a post-check, the check decides (succeeded) and the plan goes on
with its next action; with none, the action is marked ``unknown`` and the incident
escalates to a person. Either way the action ran exactly once."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.manifest import load
from bastion.playbooks import Ledger
from tests.helpers import wait_for


def _runner(path: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bastion", "playbook", "run", "-f", str(path), "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize(
    ("checked", "backend"),
    [(True, "sqlite"), (False, "sqlite"), (True, "postgresql")],
    ids=["with-check", "no-check", "with-check-postgresql"],
)
def test_an_action_cut_off_by_sigkill_is_resolved_once_on_restart(
    tmp_path: Path,
    checked: bool,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On PostgreSQL (``events:``) the adoption and the recovery go through the server's
    ledger."""
    events = ""
    if backend == "postgresql":
        monkeypatch.setenv("BASTION_EVENTS_URLS", "{}")  # restored after the test
        events = f"events: {request.getfixturevalue('pg_server').create_database()}\n"
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    ran, after = tmp_path / "ran.txt", tmp_path / "after.txt"
    check = f"          check: {{command: [test, -s, {ran}], within_s: 5}}\n" if checked else ""
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"""version: 1
system: t
{events}playbooks:
  rules:
    oom:
      on: train.exited
      when: {{data.oom: true}}
      actions:
        - do: run
          command: [sh, -c, "echo $$ >> {ran}; exec sleep 120"]
          timeout_s: 300
{check}        - do: run
          command: [sh, -c, "echo once >> {after}"]
"""
    )
    manifest = load(path)
    log = EventLog.in_state_dir(manifest.state_dir)
    assert log.backend == backend
    first = _runner(path, "r")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: log.count(ek.PLAYBOOK_RUNNER_STARTED) >= 1, "the runner to start")
        log.emit(ek.TRAIN_EXITED, "train-x", oom=True)
        wait_for(lambda: len(_lines(ran)) == 1, "the first action to be running")
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere inside the action (not a sync)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        with Ledger.in_state_dir(manifest.state_dir) as ledger:
            assert [a["state"] for a in ledger.actions()] == ["started"]
        second = _runner(path, "r")
        done = ek.PLAYBOOK_RESOLVED if checked else ek.PLAYBOOK_ESCALATED
        wait_for(lambda: log.count(done) == 1, f"{done} after the restart")
        recovered = log.query(kind=ek.PLAYBOOK_ACTION_RECOVERED)
        assert len(recovered) == 1, recovered
        with Ledger.in_state_dir(manifest.state_dir) as ledger:
            states = [a["state"] for a in ledger.actions()]
        assert len(_lines(ran)) == 1, "the cut-off action ran twice"
        if checked:
            assert recovered[0].data["outcome"] == "succeeded"
            assert states == ["succeeded", "succeeded"]
            assert _lines(after) == ["once"]
        else:
            assert recovered[0].data["outcome"] == "unknown"
            assert states == ["unknown"]
            assert not after.exists(), "the plan went on past an action of unknown outcome"
            escalated = log.query(kind=ek.PLAYBOOK_ESCALATED)[-1].data
            assert "outcome unknown" in escalated["reason"], escalated
        assert log.count(ek.PLAYBOOK_ACTION_STARTED) == (2 if checked else 1)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        for pid in _lines(ran):  # the orphaned action's sleep
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        log.close()

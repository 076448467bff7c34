"""What the training fault tests share (``tests/faults/test_train_faults.py`` and
``tests/faults/test_train_faults_restarts.py``): a fresh copy of the example, the
module-scoped ``baseline`` fixture (the final state hash of one uninterrupted run) and
``Run``, the example under a JobSupervisor in a thread.

The tests are in two files so that ``--dist loadfile`` can run them on both xdist
workers; each file imports ``baseline`` and pays its one uninterrupted run (about 6 s).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.events import EventLog
from bastion.manifest import load
from bastion.supervise import Backoff, heartbeat_note, heartbeat_progress
from bastion.train import JobResult, JobSupervisor
from bastion.vault import make_key
from tests.conftest import EXAMPLE
from tests.helpers import wait_for

STEPS = 400
JOB = "train-digits"


def prepare(target: Path) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    return target


def wait_step(cond: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``wait_for`` at 1 ms: a kill aimed at a training step must land before the worker
    runs past it."""
    return wait_for(cond, "the training step the test aims at", timeout, poll=0.001)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final state hash of one uninterrupted run."""
    work = prepare(tmp_path_factory.mktemp("baseline") / "digits")
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

        wait_step(fresh)

    def finish(self) -> JobResult:
        self.thread.join(180)
        assert self.result, "the supervisor did not finish"
        return self.result[0]


def kill_steps(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return sorted(rng.sample(range(lo, hi), n))

"""Training on a real 3-node Ray cluster (``tests/ray_cluster.py``): the node running the
worker is removed mid-training, and the Ray driver (``bastion train run``) is SIGKILLed
and started again. Each run's final weights and optimizer state must hash the same as
one uninterrupted run of the example (bit-exact resume). The step each fault aims at
comes from the ``rng`` fixture (seed printed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from bastion.events import EventLog
from bastion.manifest import load
from bastion.supervise import heartbeat_progress
from bastion.train import JobResult, JobSupervisor
from bastion.train._ray import RayChild
from bastion.vault import make_key
from tests.conftest import EXAMPLE
from tests.ray_cluster import RayCluster, ray_cluster

pytestmark = pytest.mark.slow

STEPS = 300
JOB = "train-digits"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster() as c:
        yield c


def _prepare(target: Path, address: str, *, step_ms: int = 15) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    text = (target / "bastion.yaml").read_text()
    old = '    command: [python, train.py, --steps, "400"]\n'
    assert old in text
    new = (
        f'    command: [python, train.py, --steps, "{STEPS}", --step-ms, "{step_ms}", '
        "--hash-out, final-hash]\n"
        "    slots:\n"
        f"      - {{name: ray, backend: ray, address: '{address}', resources: {{trainer: 1}}}}\n"
    )
    (target / "bastion.yaml").write_text(text.replace(old, new))
    return target


def _wait_for(cond: Callable[[], Any], timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final state hash of one uninterrupted local run."""
    work = tmp_path_factory.mktemp("baseline") / "digits"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(work / ".bastion/keys/signing.key")
    make_key(work / ".bastion/keys/admin.key")
    out = work / "hash"
    subprocess.run(
        [sys.executable, "train.py", "--steps", str(STEPS), "--hash-out", str(out)],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=180,
    )
    return out.read_text()


def test_node_loss_resumes_on_another_node_bit_exact(
    cluster: RayCluster, baseline: str, tmp_path: Path, rng: random.Random
) -> None:
    work = _prepare(tmp_path / "digits", cluster.address)
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    sup = JobSupervisor.from_manifest(manifest, JOB, events=events)
    result: list[JobResult] = []
    thread = threading.Thread(target=lambda: result.append(sup.run(handle_signals=False)))
    thread.start()
    target = rng.randrange(60, 200)

    def running_at_target() -> RayChild | None:
        child = sup.supervisor.child if sup.supervisor else None
        progress = heartbeat_progress(sup.heartbeat_path)
        if isinstance(child, RayChild) and child.exit is None and (progress or 0) >= target:
            return child
        return None

    child = _wait_for(running_at_target)
    lost_node = child.node
    at_loss = heartbeat_progress(sup.heartbeat_path)
    cluster.remove(lost_node)
    thread.join(240)
    try:
        assert result, "the supervisor did not finish"
        assert result[0].ok, result[0]
        assert (work / "final-hash").read_text() == baseline
        lost = events.query(kind="train.node.lost", subject=JOB)
        assert [e.data["node"] for e in lost] == [lost_node]
        nodes = [e.data["node"] for e in events.query(kind="train.started", subject=JOB)]
        assert nodes[0] == lost_node
        assert nodes[-1] != lost_node, f"restarted on the lost node: {nodes}"
        restored = [e.data["step"] for e in events.query(kind="train.restored", subject=JOB)]
        assert len(restored) >= 2
        assert 0 < restored[-1] <= (at_loss or 0) + 50
        print(f"node lost at step {at_loss}; resumed from step {restored[-1]} on {nodes[-1]}")
    finally:
        cluster.add_trainer()  # the next test gets two trainer nodes again


def test_driver_sigkill_then_restart_resumes_from_newest_checkpoint(
    cluster: RayCluster, baseline: str, tmp_path: Path, rng: random.Random
) -> None:
    # 60 ms steps: the orphan must still be training when the new driver comes up
    work = _prepare(tmp_path / "digits", cluster.address, step_ms=60)
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    heartbeat = Path(manifest.state_dir) / "train" / JOB / "heartbeat"
    cmd = [sys.executable, "-m", "bastion", "train", "run", "-f", str(work / "bastion.yaml"), JOB]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "driver-1.log").open("wb")
    driver = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = rng.randrange(60, 150)
    _wait_for(
        lambda: (
            (heartbeat_progress(heartbeat) or 0) >= target
            and events.query(kind="train.checkpoint.saved", subject=JOB)
        )
    )
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    log.close()
    saved_before = max(
        e.data["step"] for e in events.query(kind="train.checkpoint.saved", subject=JOB)
    )
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=300, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    assert (work / "final-hash").read_text() == baseline
    resumed = events.query(kind="train.supervisor.resumed", subject=JOB)
    assert len(resumed) == 1, out
    # the orphan was still training on its node, and was stopped politely: it wrote an
    # emergency checkpoint, the newest one, which the new worker restored
    assert resumed[0].data["orphan"] == "stopped", resumed[0].data
    saved = events.query(kind="train.checkpoint.saved", subject=JOB)
    newest = max(e.data["step"] for e in saved if e.id < resumed[0].id)
    restored = [e for e in events.query(kind="train.restored", subject=JOB) if e.id > resumed[0].id]
    assert restored
    assert restored[0].data["step"] == newest >= saved_before
    assert newest < STEPS, "the orphan had finished before the driver came back"
    print(f"driver killed at step >= {target}; resumed from step {newest}")

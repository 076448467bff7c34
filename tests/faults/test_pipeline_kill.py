"""The pipeline runner is SIGKILLed at random points; the next run resumes.

A real ``bastion pipeline run`` process is killed with a real SIGKILL at a point drawn
from a seed (after the k-th pipeline event, plus a random delay, so the kills land at
start-up, between stages, inside a stage process and around publishing). Every resumed
run must end with outputs identical, byte for byte, to an uninterrupted run, and must
not run again a stage the killed run had finished (counted from the events).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.pipeline import read_run
from tests.helpers import BASTION, run_bastion
from tests.pipelines import make_world, manifest_text, outputs, stage_events

KILLS = 20
# each stage pauses a little, so a kill can land while its process runs
SLEEPS = {name: {"sleep": 0.05} for name in "abcde"}


def _events(root: Path) -> int:
    db = root / "state" / "events.db"
    if not db.exists():
        return 0
    log = EventLog(db)
    try:
        return len(log.query(kind="pipeline.*"))
    finally:
        log.close()


def _kill_at(root: Path, events: int, delay: float) -> bool:
    """Start a runner, wait until the log holds ``events`` more pipeline events, wait
    ``delay`` more, SIGKILL it (if it has not finished by then)."""
    base = _events(root)
    argv = [*BASTION, "pipeline", "run", "p", "-f", str(root / "bastion.yaml")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and _events(root) < base + events:
            assert time.monotonic() < deadline, "the runner never reached the kill point"
            time.sleep(0.005)
        time.sleep(delay)  # a random offset past the event, not synchronisation
    finally:
        alive = proc.poll() is None
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return alive


def _runs(root: Path) -> list[str]:
    log = EventLog(root / "state" / "events.db")
    try:
        return [str(e.data["run_id"]) for e in log.query(kind=ek.PIPELINE_STARTED)]
    finally:
        log.close()


@pytest.mark.slow
def test_a_runner_killed_anywhere_resumes_to_the_same_outputs(tmp_path: Path) -> None:
    """A world is killed again and again (each resumed run is itself killed) until its
    pipeline has finished; then a last run, and a new world, until 20 SIGKILLs have hit
    a live runner at seeded points."""
    seed = int(os.environ.get("BASTION_SEED", random.randrange(2**32)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    template = make_world(tmp_path / "template", manifest_text(config=SLEEPS))
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    done = run_bastion("pipeline", "run", "p", "-f", str(reference / "bastion.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = outputs(reference)
    total = _events(reference)
    kills = mid_stage = worlds = 0
    while kills < KILLS:
        root = tmp_path / f"world-{worlds}"
        shutil.copytree(template, root)
        worlds += 1
        while True:
            finished = set(stage_events(root, ek.PIPELINE_STAGE_SUCCEEDED))
            before = len(_runs(root))
            at, delay = rng.randrange(0, total), rng.uniform(0.0, 0.08)
            if not _kill_at(root, at, delay):
                break  # this run finished before its kill point
            kills += 1
            killed = read_run(root / "state", "p")
            mid_stage += killed is not None and any(
                r.state == "running" for r in killed.stages.values()
            )
            runs = _runs(root)[before:]  # the killed run, unless killed before it began
            rerun = set(stage_events(root, ek.PIPELINE_STAGE_RUNNING, runs[0])) if runs else set()
            print(
                f"kill {kills} (world {worlds}, after event {at} + {delay * 1000:.0f} ms): "
                f"finished before {sorted(finished)}, ran {sorted(rerun)}"
            )
            assert not rerun & finished, f"kill {kills}: re-ran a finished stage"
            if kills >= KILLS:
                break
        finished = set(stage_events(root, ek.PIPELINE_STAGE_SUCCEEDED))
        done = run_bastion("pipeline", "run", "p", "-f", str(root / "bastion.yaml"))
        assert done.returncode == 0, (worlds, done.stdout + done.stderr)
        record = read_run(root / "state", "p")
        assert record is not None
        assert record.state == "succeeded"
        rerun = set(stage_events(root, ek.PIPELINE_STAGE_RUNNING, record.run_id))
        assert not rerun & finished, f"world {worlds}: the last run re-ran a finished stage"
        assert outputs(root) == expected, f"world {worlds}: outputs differ"
        shutil.rmtree(root)
    print(f"{kills} kills in {worlds} worlds, {mid_stage} while a stage was running")


def test_a_stage_left_running_by_a_killed_runner_is_stopped_before_the_resume(
    tmp_path: Path,
) -> None:
    from bastion.supervise import pid_alive

    hold = tmp_path / "hold"
    hold.write_text("")
    root = make_world(tmp_path / "w", manifest_text(config={"c": {"hold": str(hold)}}))
    argv = [*BASTION, "pipeline", "run", "p", "-f", str(root / "bastion.yaml")]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    pid = None
    while pid is None:
        assert time.monotonic() < deadline, "stage c never started"
        assert first.poll() is None
        record = read_run(root / "state", "p")
        if record is not None and record.stages["c"].state == "running":
            pid = record.stages["c"].pid
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert pid_alive(pid), "the stage process should outlive its runner (own process group)"
    second = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not stage_events(root, ek.PIPELINE_STAGE_ORPHAN_STOPPED):
            assert time.monotonic() < deadline, "the orphan was never stopped"
            assert second.poll() is None
            time.sleep(0.01)
        assert not pid_alive(pid)
        hold.unlink()  # let the re-run of c finish
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
    record = read_run(root / "state", "p")
    assert record is not None
    assert record.state == "succeeded"
    assert stage_events(root, ek.PIPELINE_STAGE_ORPHAN_STOPPED) == ["c"]
